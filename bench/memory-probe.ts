import { ImageGenerator } from '../src/gpu/image-generator.js';

// Run as its own process by the benchmark: loads the pipeline, makes one image, prints the process's resident
// memory. A fresh process per measurement keeps one configuration's allocations out of the other's figure.

const [modelDir, loraPath, loraSlots] = process.argv.slice(2);
const generator = await ImageGenerator.start(modelDir!, { kind: 'cpu', index: 0 }, { loraPath: loraPath || null, loraSlots: Number(loraSlots) });
await generator.generate({
  seed: 1, steps: 4, width: 128, height: 128,
  panels: [{ prompt: 'a photo of a cat', negativePrompt: 'wrong', guidanceScale: 13, guidanceRescale: 0, loraStrength: loraPath ? 1 : 0 }],
});
console.log(JSON.stringify({ rssBytes: process.memoryUsage().rss }));
await generator.close();
