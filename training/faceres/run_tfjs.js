// Runs the original FaceRes TF.js graph model with the pure-JS @tensorflow/tfjs (CPU backend, float32) and writes
// the requested node outputs, for training/convert_faceres.py's --check. Usage: node run_tfjs.js SPEC.json, where
// SPEC = {"model_json", "weights_dir", "input" (raw little-endian float32, N x H x W x 3: BGR, 0..255 minus the
// means, as the graph takes it), "shape" [N, H, W, 3], "outputs" [node names], "out_dir", "batch"}.
// Writes OUT_DIR/<k>.f32 per output (in the order given) and OUT_DIR/result.json (shapes, tfjs version, backend).
// @tensorflow/tfjs is resolved through NODE_PATH (the script sets it to an npm folder's node_modules).
'use strict';
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

async function main() {
  const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  await tf.setBackend('cpu');
  await tf.ready();
  const graph = JSON.parse(fs.readFileSync(spec.model_json, 'utf8'));
  const [n, h, w, c] = spec.shape;
  // The placeholder says 224 x 224; every op after it is size-agnostic (SAME padding, a global mean), so other
  // sizes run the same graph with the declared spatial dimensions relaxed to -1.
  for (const node of graph.modelTopology.node) {
    if (node.op === 'Placeholder' && node.attr && node.attr.shape) {
      const dims = node.attr.shape.shape.dim;
      if (dims.length === 4) { dims[1].size = '-1'; dims[2].size = '-1'; }
    }
  }
  const weightSpecs = [];
  const buffers = [];
  for (const group of graph.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) buffers.push(fs.readFileSync(path.join(spec.weights_dir, p)));
  }
  const all = Buffer.concat(buffers);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  const model = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: graph.modelTopology, weightSpecs, weightData, format: graph.format,
    generatedBy: graph.generatedBy, convertedBy: graph.convertedBy, signature: graph.signature,
  }));
  const raw = fs.readFileSync(spec.input);
  const input = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  if (input.length !== n * h * w * c) throw new Error(`input has ${input.length} floats, expected ${n * h * w * c}`);
  const per = h * w * c;
  const batch = spec.batch || 4;
  const chunks = spec.outputs.map(() => []);
  const shapes = spec.outputs.map(() => null);
  const t0 = Date.now();
  for (let s = 0; s < n; s += batch) {
    const m = Math.min(batch, n - s);
    const x = tf.tensor4d(input.subarray(s * per, (s + m) * per), [m, h, w, c], 'float32');
    let ys = model.execute({ input_1: x }, spec.outputs);
    if (!Array.isArray(ys)) ys = [ys];
    for (let k = 0; k < ys.length; k++) {
      chunks[k].push(Buffer.from((await ys[k].data()).buffer));
      shapes[k] = [n, ...ys[k].shape.slice(1)];
    }
    tf.dispose([x, ...ys]);
  }
  fs.mkdirSync(spec.out_dir, { recursive: true });
  spec.outputs.forEach((_, k) => fs.writeFileSync(path.join(spec.out_dir, `${k}.f32`), Buffer.concat(chunks[k])));
  fs.writeFileSync(path.join(spec.out_dir, 'result.json'), JSON.stringify({
    outputs: spec.outputs, shapes, tfjs_version: tf.version.tfjs, backend: tf.getBackend(), seconds: (Date.now() - t0) / 1000,
  }));
}

main().catch((e) => { console.error(e); process.exit(1); });
