#!/usr/bin/env node
// Packs what a Linux GPU host with PyTorch 2.11 but no Node, npm or Rust needs to run the GPU tests and
// benchmarks: this machine's Node binary (xz), the release tarballs (`npm run pack:release`: exactly
// what users install), the runtime dependency the audio path needs (@resvg, for plots), and the small
// Vorbis RAVDESS copy. On the host run.sh lays the tarballs out as `npm install` would and uses the
// torch the host already has through its active Python (`python3`), with LD_LIBRARY_PATH unset.
// Everything goes into .device/ (git-ignored, < 64 MiB). Then, on the host, from the repository root:
//   bash .device/run.sh            # npm run test:gpu + GPU benchmarks, results under $OUT if set
//   bash .device/run.sh --tests-only | --bench-only   # one half each (the device tool's 600 s per call)
//   bash .device/run.sh --full [train options]   # the reference pipeline on the Vorbis copy, on CUDA
// Whisper runs here (CPU, transformers.js): its transcripts of the FLAC corpus travel as
// .device/transcripts.json, keyed by file name, so the GPU host needs no Whisper model.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'

const root = resolve(import.meta.dirname, '..')
const out = join(root, '.device')
const data = process.env.EMOTION_GPU_DATA_SOURCE ?? resolve(root, '..', 'shared', 'data', 'ravdess-device')
const flac = process.env.RAVDESS_DIR ?? resolve(root, '..', 'shared', 'data', 'ravdess')

// Optional for users and not needed on the GPU host (see runtimeDependencies).
const NOT_CARRIED = ['@huggingface/transformers', 'onnxruntime-web']

rmSync(out, { recursive: true, force: true })
mkdirSync(out)
execFileSync('sh', ['-c', `xz -T0 -c "${process.execPath}" > "${join(out, 'node.xz')}"`])
const packed = JSON.parse(
  execFileSync(process.execPath, [join(root, 'scripts', 'pack-release.mjs'), '--no-build', '--out', out], { encoding: 'utf8' }),
)
const [mainTgz, platformTgz] = [basename(packed.main.file), basename(packed.platform.file)]
// The main package's runtime dependencies and theirs (optional ones where installed here, e.g. resvg's
// linux-x64 binary), read from package.json, so a dependency added there travels too.
for (const dep of runtimeDependencies()) cpSync(join(root, 'node_modules', dep), join(out, 'deps', dep), { recursive: true })

function runtimeDependencies() {
  const seen = new Set()
  const visit = (pkgJson) => {
    const pkg = JSON.parse(readFileSync(pkgJson, 'utf8'))
    for (const name of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
      // Optional for users and not needed on the GPU host: transformers.js (transcripts travel as JSON) and
      // onnxruntime-web (the browser export's runtime, 139 MB).
      if (seen.has(name) || NOT_CARRIED.includes(name) || !existsSync(join(root, 'node_modules', name, 'package.json'))) continue
      seen.add(name)
      visit(join(root, 'node_modules', name, 'package.json'))
    }
  }
  visit(join(root, 'package.json'))
  return [...seen]
}
if (existsSync(data)) cpSync(data, join(out, 'data'), { recursive: true })
else console.error(`warning: ${data} not found; GPU tests will look for ../shared/data/ravdess-wav`)
if (existsSync(flac)) {
  const { indexDataset, transcribe } = await import(join(root, 'dist', 'index.js'))
  // Duplicates too: a byte-identical FLAC pair need not stay identical in the lossy copy.
  const index = await indexDataset(flac)
  const paths = [...index.items.map((i) => i.path), ...index.duplicates.map((d) => d.path)]
  console.log(`transcribing ${paths.length} clips of ${flac} for the GPU run (cached after the first time)…`)
  const texts = await transcribe(paths)
  const byName = Object.fromEntries(texts.map((t) => [basename(t.path).replace(/\.[^.]*$/, ''), t.text]))
  writeFileSync(join(out, 'transcripts.json'), JSON.stringify(byName))
} else {
  console.error(`warning: ${flac} not found; run.sh --full will need Whisper on the GPU host`)
}

writeFileSync(
  join(out, 'run.sh'),
  `#!/usr/bin/env bash
# Runs on the GPU host from the repository root. Needs python3 with torch 2.11 (found by the loader as
# the active Python) and xz. No npm there: the tarballs are unpacked as npm would lay them out.
set -uo pipefail
cd "$(dirname "$0")/.."
xz -dc .device/node.xz > /tmp/node && chmod +x /tmp/node
APP=/tmp/emotion-app; rm -rf "$APP"; mkdir -p "$APP/node_modules/@emotion-pipeline"
tar xzf .device/${mainTgz} -C "$APP" && mv "$APP/package" "$APP/node_modules/emotion-pipeline"
tar xzf .device/${platformTgz} -C "$APP" && mv "$APP/package" "$APP/node_modules/@emotion-pipeline/linux-x64-gnu"
cp -r .device/deps/* "$APP/node_modules/"
echo '{"name":"gpu-host","private":true,"type":"module"}' > "$APP/package.json"
unset LD_LIBRARY_PATH
PKG="$APP/node_modules/emotion-pipeline"
export EMOTION_PIPELINE_MODULE="$PKG/dist/index.js"
export EMOTION_GPU_DATA=.device/data
RESULTS=\${OUT:-/tmp/emotion-gpu-results}; mkdir -p "$RESULTS"
/tmp/node --version
/tmp/node "$PKG/dist/cli.js" doctor --json > "$RESULTS/doctor.json"; /tmp/node "$PKG/dist/cli.js" doctor
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$RESULTS/nvidia-smi.csv"
if [ "\${1:-}" = "--full" ]; then
  shift
  RUN=/tmp/emotion-full-run; rm -rf "$RUN"
  TRANSCRIPTS=(); [ -f .device/transcripts.json ] && TRANSCRIPTS=(--transcripts .device/transcripts.json)
  /tmp/node "$PKG/dist/cli.js" train --data .device/data --out "$RUN" "\${TRANSCRIPTS[@]}" --json "$@" \\
    > "$RESULTS/full-result.json" 2> "$RESULTS/full-progress.jsonl"
  status=$?
  cp "$RUN"/*.json "$RUN"/*.md "$RUN"/*.csv "$RUN"/*.png "$RESULTS"/ 2>/dev/null
  tail -3 "$RESULTS/full-progress.jsonl"; cat "$RUN/report.md"
  exit $status
fi
# Each step bounded, so a hang (a first CUDA-graph capture on a new driver) cannot take the others.
# The device tool allows 600 s a call: --tests-only (≤ 300 s) and --bench-only (≤ 540 s) fit one each.
status=0
if [ "\${1:-}" != "--bench-only" ]; then
  timeout 300 /tmp/node --test-reporter=spec scripts/test-gpu.mjs 2>&1 | tee "$RESULTS/test-gpu.log"
  status=\${PIPESTATUS[0]}
fi
if [ "\${1:-}" != "--tests-only" ]; then
  for b in 16 64; do
    timeout 120 /tmp/node "$PKG/benches/mel.mjs" --data .device/data --device cuda --batch $b --repeats 3 | tee "$RESULTS/bench-mel-cuda-b$b.json"
  done
  timeout 120 /tmp/node "$PKG/benches/ddp.mjs" --device cuda --worlds 1 --steps audio:40,encoder:400 | tee "$RESULTS/bench-ddp-cuda.json"
  timeout 300 /tmp/node "$PKG/benches/train.mjs" --device cuda --steps 400 --configs fp32,fp32+cl,fp16,fp16+cl,bf16,bf16+cl,fp16+cl+nobench,fp32+cl+graph,fp16+cl+graph,bf16+cl+graph | tee "$RESULTS/bench-train-cuda.json"
fi
exit $status
`,
  { mode: 0o755 },
)

const size = (p) => (statSync(p).isDirectory() ? readdirSync(p).reduce((s, f) => s + size(join(p, f)), 0) : statSync(p).size)
const mib = size(out) / 2 ** 20
console.log(`.device/ ready: ${mib.toFixed(1)} MiB (limit 64 MiB with the repository)`)
console.log('On a GPU host, from the repository root: bash .device/run.sh')
console.log('With the device tool: run { command: "bash .device/run.sh", carry: [".device"] }')
