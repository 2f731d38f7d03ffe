// face-api's own FaceExpressionNet (tfjs, pure-JS CPU backend) on crops and images written by
// tests/face/faceapi_reference.py. Usage: node run.cjs REQUEST_DIR OUT_JSON
'use strict';
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

const SIZE = 112;

function rows(tensor) {
  const [n, k] = tensor.shape;
  const data = Array.from(tensor.dataSync());
  const out = [];
  for (let i = 0; i < n; i += 1) out.push(data.slice(i * k, (i + 1) * k));
  return out;
}

async function main() {
  const [dir, outFile] = process.argv.slice(2);
  await tf.setBackend('cpu');
  await tf.ready();
  const pkg = path.dirname(require.resolve('@vladmandic/face-api/package.json'));
  await faceapi.nets.faceExpressionNet.loadFromDisk(path.join(pkg, 'model'));
  const net = faceapi.nets.faceExpressionNet;
  const req = JSON.parse(fs.readFileSync(path.join(dir, 'request.json'), 'utf8'));
  const out = {
    backend: tf.getBackend(),
    tfjs_version: tf.version.tfjs,
    faceapi_version: JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8')).version,
    classes: ['neutral', 'happy', 'sad', 'angry', 'fearful', 'disgusted', 'surprised'],
    logits: [],
    probabilities: [],
    images: [],
  };
  // 1. The network alone: each 112x112 crop as an input tensor (no resize, no padding in toBatchTensor).
  const crops = fs.readFileSync(path.join(dir, 'crops.bin'));
  const per = SIZE * SIZE * 3;
  for (let i = 0; i < req.num_crops; i += 1) {
    const px = Float32Array.from(crops.subarray(i * per, (i + 1) * per));
    const t = tf.tensor3d(px, [SIZE, SIZE, 3], 'float32');
    const input = await faceapi.toNetInput(t);
    const logits = net.runNet(input);
    const probs = net.forwardInput(input);
    out.logits.push(rows(logits)[0]);
    out.probabilities.push(rows(probs)[0]);
    tf.dispose([t, logits, probs]);
  }
  // 2. face-api's whole path from an image and 68 landmarks: FaceLandmarks68.align() (min box + 20 %),
  //    extractFaceTensors (clip, floor, slice), predictExpressions (pad to square, resize to 112, softmax).
  for (const im of req.images) {
    const { width, height } = im;
    const bytes = fs.readFileSync(path.join(dir, im.file));
    const img = tf.tensor3d(Int32Array.from(bytes), [height, width, 3], 'int32');
    const rel = im.landmarks.map(([x, y]) => new faceapi.Point(x / width, y / height));
    const lm = new faceapi.FaceLandmarks68(rel, { width, height });
    const box = lm.align();
    const [face] = await faceapi.extractFaceTensors(img, [box]);
    const clipped = box.clipAtImageBorders(width, height);
    const expr = await net.predictExpressions(face);
    out.images.push({
      box: [clipped.x, clipped.y, clipped.width, clipped.height],
      probabilities: out.classes.map((c) => expr[c]),
    });
    tf.dispose([img, face]);
  }
  fs.writeFileSync(outFile, JSON.stringify(out));
}

main().catch((err) => { console.error(err); process.exit(1); });
