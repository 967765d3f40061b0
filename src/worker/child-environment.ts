// The environment a worker gives the programs it runs (TRAINER_COMMAND): what a program needs to find its tools,
// libraries, GPUs and model caches, and nothing else. The worker's own environment holds DISCORD_TOKEN, REDIS_URL
// with its password and whatever else the host put there; a trainer is someone else's code and gets none of it.

/** Names passed on as they are (compared without case: Windows spells them `Path`, `SystemRoot`). */
const PASSED_NAMES = new Set([
  // Finding programs and files, and the user's locale.
  'PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'LANGUAGE', 'TZ', 'TMPDIR', 'TMP', 'TEMP',
  // Windows cannot start a shell or load system libraries without these.
  'SYSTEMROOT', 'WINDIR', 'COMSPEC', 'PATHEXT', 'USERPROFILE', 'APPDATA', 'LOCALAPPDATA', 'PROGRAMDATA',
  // Libraries, and the Python environment a trainer usually runs in.
  'LD_LIBRARY_PATH', 'DYLD_LIBRARY_PATH', 'PYTHONPATH', 'PYTHONUNBUFFERED', 'VIRTUAL_ENV', 'CONDA_PREFIX',
  // Which GPUs the trainer may use.
  'NVIDIA_VISIBLE_DEVICES', 'NVIDIA_DRIVER_CAPABILITIES', 'HIP_VISIBLE_DEVICES', 'ROCR_VISIBLE_DEVICES', 'GPU_DEVICE_ORDINAL',
  'PYTORCH_CUDA_ALLOC_CONF', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS',
  // Where models are cached, so a trainer does not download SDXL again (HF_TOKEN is deliberately not here).
  'HF_HOME', 'HF_HUB_CACHE', 'HF_HUB_OFFLINE', 'HF_DATASETS_CACHE', 'TRANSFORMERS_CACHE', 'TRANSFORMERS_OFFLINE',
  'DIFFUSERS_CACHE', 'TORCH_HOME', 'XDG_CACHE_HOME',
]);
/** Families passed on whole: locale categories, and CUDA's and ROCm's device and path settings. */
const PASSED_PREFIXES = ['LC_', 'CUDA_', 'CUDNN_', 'ROCM_'];
/** Never passed, even when a name above would match: a family may grow a credential. */
const SECRET_LOOKING = /TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|PRIVATE/;

export function childEnvironment(parent: NodeJS.ProcessEnv, own: Readonly<Record<string, string>>): NodeJS.ProcessEnv {
  const passed: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(parent)) {
    const upper = name.toUpperCase();
    const allowed = PASSED_NAMES.has(upper) || PASSED_PREFIXES.some((prefix) => upper.startsWith(prefix));
    if (allowed && !SECRET_LOOKING.test(upper) && value !== undefined) passed[name] = value;
  }
  return { ...passed, ...own };
}
