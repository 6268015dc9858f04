// The Teach panel's drawing pad: draw a picture of the concept with the mouse, pen or finger and
// add it to the lesson's pictures as a PNG made in this page (no request, like a picked file).
const $ = (id) => document.getElementById(id);

export class DrawingPad {
  /** `onAdd(file)`: receives each added drawing as a PNG `File`. */
  constructor(onAdd) {
    this.onAdd = onAdd;
    this.canvas = $('draw-canvas');
    this.ctx = this.canvas.getContext('2d');
    this.count = 0;
    this.last = null;
    this.clear();
    this.wire();
  }

  wire() {
    const c = this.canvas;
    c.addEventListener('pointerdown', (e) => { c.setPointerCapture(e.pointerId); this.last = this.at(e); this.stroke(this.last); });
    c.addEventListener('pointermove', (e) => { if (this.last) this.stroke(this.at(e)); });
    const end = () => { this.last = null; };
    c.addEventListener('pointerup', end);
    c.addEventListener('pointercancel', end);
    $('draw-clear').addEventListener('click', () => this.clear());
    $('draw-bg').addEventListener('change', () => this.clear());
    $('draw-add').addEventListener('click', () => this.add());
  }

  /** The pointer's position in canvas pixels (the canvas may be shown scaled). */
  at(e) {
    const r = this.canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * (this.canvas.width / r.width), (e.clientY - r.top) * (this.canvas.height / r.height)];
  }

  /** A round-capped line from the last point to `p` (a dot when they are the same). */
  stroke(p) {
    const ctx = this.ctx;
    ctx.strokeStyle = $('draw-color').value;
    ctx.lineWidth = Number($('draw-size').value);
    ctx.lineCap = 'round';
    ctx.lineJoin = 'round';
    ctx.beginPath();
    ctx.moveTo(this.last[0], this.last[1]);
    ctx.lineTo(p[0], p[1]);
    ctx.stroke();
    this.last = p;
  }

  clear() {
    this.ctx.fillStyle = $('draw-bg').value;
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
  }

  add() {
    this.canvas.toBlob((blob) => {
      if (!blob) return;
      this.count += 1;
      this.onAdd(new File([blob], `drawing-${this.count}.png`, { type: 'image/png' }));
    }, 'image/png');
  }
}
