// Draws one token's attention map over its image: the image greyed, the map as a red overlay
// (normalised to its own maximum, nearest-neighbour upscaled to the canvas).

/** `attention`: { tokens, width, height, maps: Float32Array [tokens * height * width] }. */
export function drawAttention(canvas, img, attention, token) {
  const { width: w, height: h, maps } = attention;
  const ctx = canvas.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.filter = 'grayscale(1) brightness(0.8)';
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  ctx.filter = 'none';
  const map = maps.subarray(token * w * h, (token + 1) * w * h);
  let max = 1e-12;
  for (const v of map) max = Math.max(max, v);
  const overlay = new ImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    overlay.data[i * 4] = 255;
    overlay.data[i * 4 + 3] = Math.round((map[i] / max) * 200);
  }
  const small = new OffscreenCanvas(w, h);
  small.getContext('2d').putImageData(overlay, 0, 0);
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
}
