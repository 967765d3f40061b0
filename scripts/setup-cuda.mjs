// Installs onnxruntime-node's CUDA 12 provider libraries on a GPU host. The package's own postinstall would do it
// on every `npm ci`, downloading hundreds of MB that CPU hosts and CI never use, so .npmrc skips it by default.
// The environment variable wins over the `skip` that npm passes down from .npmrc.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const installScript = path.join(path.dirname(require.resolve('onnxruntime-node/package.json')), 'script', 'install.js');
const result = spawnSync(process.execPath, [installScript], {
  stdio: 'inherit',
  env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'cuda12' },
});
if (result.status !== 0) {
  console.error('setup:cuda failed: the CUDA provider is downloaded from NuGet, so this host needs internet access.');
}
process.exit(result.status ?? 1);
