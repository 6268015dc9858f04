// The scripted half of the embed example: createGenerator + generate, after the element is done
// (one GPU job at a time keeps a software adapter responsive).
import { createGenerator } from './embed.js';

const out = document.getElementById('scripted');
const element = document.getElementById('element');

async function scripted() {
  const gen = await createGenerator({ model: 'builtin', worker: true });
  const { png, width, height } = await gen.generate('a blue square', { steps: 2, seed: 2 });
  const img = document.createElement('img');
  img.src = URL.createObjectURL(png);
  img.width = width;
  img.height = height;
  img.alt = 'a blue square';
  out.replaceChildren(img);
  out.dataset.state = 'done';
  gen.close();
}

element.addEventListener('generated', () => scripted().catch((e) => {
  out.textContent = `${e.name}: ${e.message}`;
  out.dataset.state = 'error';
}), { once: true });
