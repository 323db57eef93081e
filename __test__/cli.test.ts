// The command line and the README against the code: help texts state the defaults the library uses
// (presets and the core's resolved settings); the default recipe trains on data without speakers
// (<label>/ folders, a manifest without a speaker column) with its speaker adversary switched off and
// said so; checks that would fail are made before any feature is extracted and name the user's option.
import test from 'ava'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import { locateLibtorch } from '../src/libtorch.js'
import { native } from '../src/native.js'
import { defaultModels, defaultSpeakerAdversary, defaultSpeedPerturb, PRESET_EPOCHS } from '../src/presets.js'
import { haveRavdess, listAudio, NO_DATA, ravdessDir, skip, tempDir } from './helpers.js'

const root = resolve(import.meta.dirname, '..')
const cli = join(root, 'dist', 'cli.js')
const EMOTIONS = ['neutral', 'calm', 'happy', 'sad', 'angry', 'fearful', 'disgust', 'surprised']

function runCli(args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 280_000 })
}

const resolved = (settings: object) => JSON.parse(native.resolveTrainConfig(JSON.stringify(settings)))

test('train --help states the defaults the library resolves', (t) => {
  const help = execFileSync(process.execPath, [cli, 'train', '--help'], { encoding: 'utf8' })
  t.regex(
    help,
    new RegExp(
      `--models LIST .*\\(default: ${defaultModels('recommended').join(',')};\\s+with --preset reference: ${defaultModels('reference').join(',')}\\)`,
    ),
  )
  t.regex(
    help,
    new RegExp(`--speed-perturb LIST .*\\(default: ${defaultSpeedPerturb('recommended').join(',')};\\s+with --preset reference: none\\)`),
  )
  // Epochs: the numbers in the help are the core's.
  t.is(resolved({ model: 'encoder' }).epochs, PRESET_EPOCHS.recommendedEncoder)
  t.is(resolved({ model: 'encoder', preset: 'reference' }).epochs, PRESET_EPOCHS.default)
  t.is(resolved({ model: 'audio' }).epochs, PRESET_EPOCHS.default)
  t.regex(
    help,
    new RegExp(
      `--epochs N +default ${PRESET_EPOCHS.default} \\(the encoder model with the recommended preset: ${PRESET_EPOCHS.recommendedEncoder}\\)`,
    ),
  )
  const audio = resolved({ model: 'audio' })
  t.regex(help, new RegExp(`--batch-size N +default ${audio.batchSize}\\n`))
  t.regex(help, new RegExp(`--accumulation N +default ${audio.accumulation}\\n`))
  t.regex(help, new RegExp(`--lr X +default ${audio.optim.lr}\\n`))
  t.regex(help, new RegExp(`--seed N +default ${audio.seed}\\n`))
  t.regex(
    help,
    /--amp MODE +auto \(default: fp16 on CUDA; on the CPU bf16 with the recommended preset where\s+the CPU has native bf16, else fp32\)/,
  )
  t.regex(help, /--json +progress events as JSON lines on stderr, the result as JSON on stdout/)
})

test('the README states the same defaults as the code', (t) => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const row = (option: string) => readme.split('\n').find((l) => l.startsWith(`| \`${option}\``)) ?? ''
  const quoted = (xs: string[]) => `[${xs.map((x) => `'${x}'`).join(',')}]`
  t.true(row('models').includes(`recommended: \`${quoted(defaultModels('recommended'))}\``), row('models'))
  t.true(row('models').includes(`reference: \`${quoted(defaultModels('reference'))}\``), row('models'))
  t.true(row('speedPerturb').includes(`\`[${defaultSpeedPerturb('recommended').join(', ')}]\``), row('speedPerturb'))
  t.true(
    row('epochs').includes(`${PRESET_EPOCHS.default} (${PRESET_EPOCHS.recommendedEncoder} for the recommended encoder model)`),
    row('epochs'),
  )
  t.true(
    readme.includes(`\`speakerAdversary\``) &&
      readme.includes(`${defaultSpeakerAdversary('recommended')} in the pipeline's recommended recipe`),
  )
  t.regex(readme, /--json.*JSON lines on\s+stderr.*result as JSON on\s+stdout/s)
})

/** 3 clips of each emotion from actors 1 and 2, as `<label>/clip-NNN.flac`: names that say nothing of speakers. */
function labelFolders(): string {
  const dir = tempDir('ep-labels-')
  let n = 0
  for (const [k, emotion] of EMOTIONS.entries()) {
    mkdirSync(join(dir, emotion))
    const code = String(k + 1).padStart(2, '0')
    const clips = ['Actor_01', 'Actor_02'].flatMap((a) => listAudio(join(ravdessDir, a)).filter((f) => basename(f).slice(6, 8) === code))
    for (const clip of clips.slice(0, 3)) symlinkSync(clip, join(dir, emotion, `clip-${String(++n).padStart(3, '0')}.flac`))
  }
  return dir
}

/** A CSV manifest (path,label) without a speaker column over the same kind of clips. */
function manifest(): string {
  const dir = labelFolders()
  const rows = EMOTIONS.flatMap((e) => readdirSync(join(dir, e)).map((f) => `${e}/${f},${e}`))
  const file = join(dir, 'clips.csv')
  writeFileSync(file, `path,label\n${rows.join('\n')}\n`)
  return file
}

for (const [name, data] of [
  ['<label>/ folders', labelFolders],
  ['a manifest without speakers', manifest],
] as const) {
  test.serial(`the default recipe trains on ${name}: the speaker adversary is switched off, with a warning and a report line`, (t) => {
    if (!haveRavdess) return skip(t, NO_DATA)
    const out = join(tempDir('ep-cli-run-'), 'run')
    const r = runCli(['train', '--data', data(), '--out', out, '--epochs', '2', '--device', 'cpu', '--json'])
    t.is(r.status, 0, r.stderr)
    const events = r.stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    const warning = events.find((e) => e.type === 'warning')
    t.regex(warning?.message ?? '', /speaker adversary off: the training clips of .* name no speaker/)
    t.true(
      events.findIndex((e) => e.type === 'warning') < events.findIndex((e) => e.type === 'stage' && e.stage === 'embeddings'),
      'decided before the encoder pass',
    )
    const result = JSON.parse(r.stdout.trim())
    t.deepEqual(Object.keys(result.models), ['encoder'])
    t.is(result.models.encoder.config.encoderHead.speakerAdversary, 0)
    t.regex(readFileSync(join(out, 'report.md'), 'utf8'), /Speaker adversary off: the training clips of .* name no speaker/)
  })
}

test('a speaker adversary the user set, on data without speakers, is refused by name before any feature', (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const out = join(tempDir('ep-cli-run-'), 'run')
  const r = runCli([
    'train',
    '--data',
    labelFolders(),
    '--out',
    out,
    '--train',
    '{"encoder":{"encoderHead":{"speakerAdversary":0.5}}}',
    '--device',
    'cpu',
    '--json',
  ])
  t.is(r.status, 1)
  t.regex(
    r.stderr,
    /error \[INVALID_OPTION\]: invalid option `train\.encoder\.encoderHead\.speakerAdversary`: is 0\.5, but the speaker adversary needs at least 2 training speakers/,
  )
  t.notRegex(r.stderr, /"stage":"embeddings"/)
  t.notRegex(r.stderr, /encoderHead\.speakers/)
})

test('cv: two speakers name --val-fraction, no speakers say so, --split speaker without speakers names --split', (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const two = tempDir('ep-two-')
  for (const a of ['Actor_01', 'Actor_02']) symlinkSync(join(ravdessDir, a), join(two, a))
  const out = join(tempDir('ep-cv-'), 'cv')
  const cv = runCli(['cv', '--data', two, '--out', out, '--folds', '2'])
  t.is(cv.status, 1)
  t.regex(cv.stderr, /invalid option `valFraction`: is 0\.125 \(--val-fraction\): 2 folds over 2 speakers leave 1 training speaker\(s\)/)
  t.notRegex(cv.stderr, /valSpeakers/)
  t.false(existsSync(join(out, 'fold-0')), 'refused before any fold')
  const none = runCli(['cv', '--data', labelFolders(), '--out', out])
  t.is(none.status, 1)
  t.regex(none.stderr, /error \[DATASET\]: .*: no clip names its speaker, so cross-validation by speaker cannot form folds/)
  const split = runCli(['train', '--data', labelFolders(), '--out', out, '--split', 'speaker'])
  t.is(split.status, 1)
  t.regex(split.stderr, /invalid option `split`: is 'speaker' \(--split\), which needs every clip's speaker, but 24 of 24 clips/)
})

test('--version is the package version; every command has --help', (t) => {
  t.is(runCli(['--version']).stdout.trim(), JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version)
  for (const command of ['train', 'cv', 'predict', 'doctor', 'install-torch', 'install-models', 'download', 'bench', 'demo']) {
    const r = runCli([command, '--help'])
    t.is(r.status, 0, command)
    t.regex(r.stdout, new RegExp(`^emotion-pipeline ${command}`), command)
  }
})

// Serial (AVA runs serial tests first, alone): the other tests here block this worker's event loop in
// spawnSync for tens of seconds, long enough for the child to finish its epochs before the kill is sent.
test.serial('SIGTERM stops train like Ctrl-C: at the next step, with a resumable checkpoint, exit 143; --resume finishes it', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const out = join(tempDir('ep-sigterm-'), 'run')
  const args = [cli, 'train', '--data', ravdessDir, '--out', out, '--max-items', '40', '--models', 'probe', '--epochs', '2000', '--json']
  const status = await new Promise<number | null>((done) => {
    const child = spawn(process.execPath, args)
    let sent = false
    child.stderr.on('data', (chunk: Buffer) => {
      // The first finished epoch: the job is inside its training loop.
      if (!sent && chunk.toString().includes('"type":"epochEnd"')) {
        sent = true
        child.kill('SIGTERM')
      }
    })
    child.on('close', (code) => done(code))
  })
  t.is(status, 143)
  const state = JSON.parse(readFileSync(join(out, 'models', 'probe', 'last.state.json'), 'utf8'))
  t.true(state.epoch >= 1 && state.epoch < 2000 && !state.finished, `stopped at epoch ${state.epoch}`)
  const quiet = args.map((a) => (a === '--json' ? '--quiet' : a))
  const resumed = spawnSync(process.execPath, [...quiet, '--resume'], { encoding: 'utf8', timeout: 280_000 })
  t.is(resumed.status, 0, resumed.stderr.slice(-2000))
  t.true(JSON.parse(readFileSync(join(out, 'models', 'probe', 'last.state.json'), 'utf8')).finished)
})

test('a bad EMOTION_PIPELINE_CPU_CACHE is refused by name, not quietly ignored', (t) => {
  const r = spawnSync(process.execPath, [cli, 'train', '--data', ravdessDir, '--out', join(tempDir('ep-env-'), 'run')], {
    encoding: 'utf8',
    env: { ...process.env, EMOTION_PIPELINE_CPU_CACHE: 'abc' },
  })
  t.is(r.status, 1)
  t.regex(r.stderr, /INVALID_OPTION.*EMOTION_PIPELINE_CPU_CACHE.*'abc'/)
})

test('a non-empty out is refused by name unless --resume goes on with its run or --overwrite replaces it (train, cv, symlinks)', (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const base = tempDir('ep-out-rule-')
  const out = join(base, 'run')
  const train = (...extra: string[]) =>
    runCli(['train', '--data', ravdessDir, '--out', out, '--max-items', '32', '--epochs', '1', '--quiet', ...extra])
  t.is(train('--models', 'probe').status, 0)
  const again = train('--models', 'probe')
  t.is(again.status, 1)
  t.regex(again.stderr, /INVALID_OPTION.*`out`: .*\/run holds a training run; pass --resume .* or --overwrite/)
  // Through a symlink to the finished run: the same refusal.
  symlinkSync(out, join(base, 'link'))
  const viaLink = runCli(['train', '--data', ravdessDir, '--out', join(base, 'link'), '--max-items', '32', '--epochs', '1'])
  t.regex(viaLink.stderr, /holds a training run/)
  // cv into a training run: refused, even with --resume.
  const cv = runCli(['cv', '--data', ravdessDir, '--out', out, '--folds', '2', '--resume'])
  t.is(cv.status, 1)
  t.regex(cv.stderr, /holds a training run; pass --overwrite/)
  // --overwrite replaces the run: the earlier model's folder goes.
  t.is(train('--models', 'encoder', '--overwrite').status, 0)
  t.deepEqual(readdirSync(join(out, 'models')), ['encoder'])
  // A folder of other files: refused; --overwrite writes the run beside them and keeps them.
  const other = join(base, 'notes')
  mkdirSync(other)
  writeFileSync(join(other, 'mine.txt'), 'keep me')
  const refused = runCli(['train', '--data', ravdessDir, '--out', other, '--max-items', '32', '--epochs', '1', '--models', 'probe'])
  t.regex(refused.stderr, /holds files that are not a run of this library; pass --overwrite/)
  t.is(
    runCli(['train', '--data', ravdessDir, '--out', other, '--max-items', '32', '--epochs', '1', '--models', 'probe', '--overwrite'])
      .status,
    0,
  )
  t.is(readFileSync(join(other, 'mine.txt'), 'utf8'), 'keep me')
  // A run that failed before any checkpoint (only its split.json): the corrected command just runs.
  const failed = join(base, 'failed')
  mkdirSync(failed)
  copyFileSync(join(out, 'split.json'), join(failed, 'split.json'))
  const retried = runCli(['train', '--data', ravdessDir, '--out', failed, '--max-items', '32', '--epochs', '1', '--models', 'probe'])
  t.is(retried.status, 0, retried.stderr)
  t.true(existsSync(join(failed, 'metrics.json')))
  // Not when anything else is there: a file of the user's beside the split, or a config.json of theirs.
  for (const [name, extra] of [
    ['beside', 'mine.txt'],
    ['theirs', 'config.json'],
  ]) {
    const dir = join(base, name)
    mkdirSync(dir)
    if (name === 'beside') copyFileSync(join(out, 'split.json'), join(dir, 'split.json'))
    writeFileSync(join(dir, extra), 'keep me')
    const kept = runCli(['train', '--data', ravdessDir, '--out', dir, '--max-items', '32', '--epochs', '1', '--models', 'probe'])
    t.is(kept.status, 1, name)
    t.regex(kept.stderr, /INVALID_OPTION.*`out`/)
    t.is(readFileSync(join(dir, extra), 'utf8'), 'keep me')
  }
})

test('--max-items too small to leave a training clip says so, naming the option', (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const r = runCli(['train', '--data', ravdessDir, '--out', join(tempDir('ep-mi1-'), 'run'), '--max-items', '1', '--models', 'probe'])
  t.is(r.status, 1)
  t.regex(r.stderr, /INVALID_OPTION.*`maxItems`: is 1 \(--max-items\): the split of 1 clip\(s\) leaves none to train on/)
})

test('an unusable default feature cache is IO naming cacheDir and the ways out; --cache-dir none trains without one', (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const file = join(tempDir('ep-cache-file-'), 'not-a-folder')
  writeFileSync(file, 'x')
  const env = { ...process.env, EMOTION_PIPELINE_CACHE: join(file, 'cache'), LIBTORCH: locateLibtorch().found!.root }
  const args = ['train', '--data', ravdessDir, '--max-items', '24', '--epochs', '1', '--models', 'audio', '--quiet']
  const opts = { encoding: 'utf8' as const, env, timeout: 280_000 }
  const refused = spawnSync(process.execPath, [cli, ...args, '--out', join(tempDir('ep-cache-run-'), 'run')], opts)
  t.is(refused.status, 1)
  t.regex(refused.stderr, /error \[IO\]: option `cacheDir`: .*the default feature cache; set cacheDir \(--cache-dir DIR/)
  const none = spawnSync(process.execPath, [cli, ...args, '--out', join(tempDir('ep-cache-run-'), 'run'), '--cache-dir', 'none'], opts)
  t.is(none.status, 0, none.stderr)
})
