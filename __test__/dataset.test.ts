import test from 'ava'
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { EmotionPipelineError, extractMel, indexDataset, loadSplit, saveSplit, splitDataset } from '../src/index.js'
import type { DatasetIndex, DatasetItem } from '../src/index.js'
import { skip, haveRavdess, listAudio, NO_DATA, ravdessDir, tempDir } from './helpers.js'

let full: DatasetIndex | undefined
async function fullIndex(): Promise<DatasetIndex> {
  full ??= await indexDataset(ravdessDir)
  return full
}

const EMOTIONS = ['angry', 'calm', 'disgust', 'fearful', 'happy', 'neutral', 'sad', 'surprised']

test('RAVDESS actors 1–20: 80 neutral and 160 of every other emotion, 60 per actor, all 48 kHz', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const index = await fullIndex()
  t.is(index.layout, 'ravdess')
  t.deepEqual(index.problems, [])
  // Counted before de-duplication: every file found is either kept or reported as a duplicate.
  const all = [...index.items.map((i) => i.label), ...index.duplicates.map((d) => index.items.find((i) => i.path === d.duplicateOf)!.label)]
  const perClass = Object.fromEntries(EMOTIONS.map((e) => [e, all.filter((l) => l === e).length]))
  t.deepEqual(perClass, { angry: 160, calm: 160, disgust: 160, fearful: 160, happy: 160, neutral: 80, sad: 160, surprised: 160 })
  t.is(Object.keys(index.counts.bySpeaker).length, 20)
  t.true(index.items.every((i) => i.sampleRate === 48000 && i.durationSeconds! > 2.5 && i.durationSeconds! < 6))
  t.true(index.items.every((i) => /^[0-9a-f]{64}$/.test(i.hash)))
  t.true(index.counts.durationSeconds.min > 2.5 && index.counts.durationSeconds.max < 6)
})

test('byte-identical clips inside the corpus are reported as content duplicates', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const index = await fullIndex()
  for (const d of index.duplicates) {
    const kept = index.items.find((i) => i.path === d.duplicateOf)!
    t.is(d.reason, 'content')
    t.truthy(kept, `${d.duplicateOf} is kept`)
    t.false(index.items.some((i) => i.path === d.path))
  }
  t.log(
    `duplicates in actors 1–20: ${index.duplicates.map((d) => `${basename(d.path)} = ${basename(d.duplicateOf)}`).join(', ') || 'none'}`,
  )
  t.is(new Set(index.items.map((i) => i.hash)).size, index.items.length, 'kept items have distinct content')
})

test('a copied actor folder, a corrupt clip, a song clip and a misplaced clip are all reported', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const root = tempDir('ep-dataset-')
  const actor = listAudio(join(ravdessDir, 'Actor_03')).slice(0, 12)
  for (const folder of ['Actor_03', 'Actor_03 - Copy']) {
    mkdirSync(join(root, folder))
    for (const f of actor) copyFileSync(f, join(root, folder, basename(f)))
  }
  writeFileSync(join(root, 'Actor_03', '03-01-05-01-01-01-03.ogg'), Buffer.from('not audio at all'))
  // Same RAVDESS identity, other bytes: the Vorbis copy of a clip already there.
  const vorbis = join(ravdessDir, '..', 'ravdess-device', 'Actor_03', basename(actor[2]).replace('.flac', '.ogg'))
  const haveVorbis = existsSync(vorbis)
  if (haveVorbis) copyFileSync(vorbis, join(root, 'Actor_03', basename(vorbis)))
  const song = join(root, 'Actor_03', '03-02-03-01-01-01-03.flac')
  copyFileSync(actor[0], song)
  mkdirSync(join(root, 'Actor_04'))
  copyFileSync(actor[1], join(root, 'Actor_04', basename(actor[1])))
  writeFileSync(join(root, 'README.txt'), 'ignored')

  const index = await indexDataset(root)
  t.is(index.items.length, 12)
  t.is(index.duplicates.filter((d) => d.path.includes('Copy')).length, 12)
  t.true(index.duplicates.filter((d) => d.path.includes('Copy')).every((d) => d.reason === 'content'))
  if (haveVorbis)
    t.deepEqual(
      index.duplicates.filter((d) => d.reason === 'identity').map((d) => basename(d.path)),
      [basename(vorbis)],
    )
  t.is(index.counts.skipped, 1, 'the song clip is skipped by speechOnly')
  const corrupt = index.problems.find((p) => p.path.endsWith('03-01-05-01-01-01-03.ogg'))
  t.is(corrupt?.kind, 'unreadable')
  const misplaced = index.problems.find((p) => p.path.includes('Actor_04'))
  t.is(misplaced?.kind, 'mislabelled')
  t.regex(misplaced!.message, /actor 03.*Actor_04/)

  const withSongs = await indexDataset(root, { speechOnly: false })
  // The song clip is a byte copy of actor[0] under another emotion's name: kept, or named as a contradiction.
  t.true(withSongs.items.some((i) => i.path === song) || withSongs.problems.some((p) => p.path === song && p.kind === 'mislabelled'))
})

test('missing folders and empty folders are DATASET errors naming the path', async (t) => {
  const missing = await t.throwsAsync(indexDataset('/nonexistent/ravdess'), { instanceOf: EmotionPipelineError })
  t.is(missing!.code, 'DATASET')
  t.regex(missing!.message, /\/nonexistent\/ravdess/)
  const empty = await t.throwsAsync(indexDataset(tempDir()))
  t.regex(empty!.message, /no audio files/)
  const bad = await t.throwsAsync(indexDataset(tempDir(), { layout: 'wrong' as never }))
  t.is((bad as EmotionPipelineError).code, 'INVALID_OPTION')
})

/** Copies `files` into `<label>/` folders under `root`, alternating between the two labels. */
function sortInto(root: string, files: string[], labels: [string, string], name: (file: string, i: number) => string): void {
  for (const [i, f] of files.entries()) {
    mkdirSync(join(root, labels[i % 2]), { recursive: true })
    copyFileSync(f, join(root, labels[i % 2], name(f, i)))
  }
}

test('label folders and CSV/JSONL manifests index generic corpora', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const root = tempDir('ep-generic-')
  const files = listAudio(join(ravdessDir, 'Actor_05')).slice(0, 6)
  sortInto(root, files, ['sad', 'happy'], (_, i) => `clip${i}.flac`)
  const folders = await indexDataset(root)
  t.is(folders.layout, 'folders')
  t.deepEqual(folders.counts.byLabel, { happy: 3, sad: 3 })

  const csv = join(root, 'manifest.csv')
  writeFileSync(
    csv,
    'path,label,speaker\n' + files.map((_, i) => `${i % 2 ? 'happy' : 'sad'}/clip${i}.flac,${i < 3 ? 'a' : 'b'},spk${i % 3}`).join('\n'),
  )
  const fromCsv = await indexDataset(root, { layout: 'manifest', manifest: csv })
  t.deepEqual(fromCsv.counts.byLabel, { a: 3, b: 3 })
  t.deepEqual(fromCsv.counts.bySpeaker, { spk0: 2, spk1: 2, spk2: 2 })

  // A spreadsheet export: byte-order mark, CRLF, quoted fields holding commas and quotes.
  const quoted = join(root, 'export.csv')
  writeFileSync(
    quoted,
    '\ufeffpath,label,speaker\r\n' +
      files.map((_, i) => `"${i % 2 ? 'happy' : 'sad'}/clip${i}.flac","${i < 3 ? 'sad, quiet' : 'says ""hi""'}",spk${i % 3}`).join('\r\n') +
      '\r\n',
  )
  const fromQuoted = await indexDataset(root, { layout: 'manifest', manifest: quoted })
  t.deepEqual(fromQuoted.counts.byLabel, { 'sad, quiet': 3, 'says "hi"': 3 })
  t.deepEqual(fromQuoted.problems, [])

  const jsonl = join(root, 'manifest.jsonl')
  writeFileSync(
    jsonl,
    files.map((_, i) => JSON.stringify({ path: `${i % 2 ? 'happy' : 'sad'}/clip${i}.flac`, label: 'x' })).join('\n') +
      '\n{"path":"gone.wav","label":"x"}\n',
  )
  const fromJsonl = await indexDataset(root, { layout: 'manifest', manifest: jsonl })
  t.is(fromJsonl.items.length, 6)
  t.deepEqual(
    fromJsonl.problems.map((p) => [basename(p.path), p.kind]),
    [['gone.wav', 'unreadable']],
  )

  // A manifest given without a layout is read (it used to be ignored for the folders); with another
  // layout it is refused by name.
  t.deepEqual((await indexDataset(root, { manifest: csv })).counts.byLabel, { a: 3, b: 3 })
  await t.throwsAsync(indexDataset(root, { layout: 'folders', manifest: csv }), {
    code: 'INVALID_OPTION',
    message: /`manifest`: is read only with layout 'manifest', not 'folders'/,
  } as never)
  // The same audio listed under two labels: a problem naming both, not a quiet duplicate.
  const twice = join(root, 'twice.csv')
  writeFileSync(twice, 'path,label\nsad/clip0.flac,sad\nsad/clip0.flac,happy\n')
  const conflicting = await indexDataset(root, { manifest: twice })
  t.is(conflicting.items.length, 1)
  t.deepEqual(conflicting.duplicates, [])
  t.regex(conflicting.problems[0]?.message ?? '', /same audio as .*clip0\.flac, which is labelled "sad", but labelled "happy"/)
  // A header without the columns names what it found (and a `;` file is said to be one).
  const semicolons = join(root, 'semi.csv')
  writeFileSync(semicolons, 'path;label\nsad/clip0.flac;sad\n')
  await t.throwsAsync(indexDataset(root, { manifest: semicolons }), {
    message: /header needs a `path` column \(path,label\[,speaker\]\); found: path;label \(the header is split by commas only\)/,
  })
})

test("RAVDESS files sorted into folders of the user's labels are indexed by those folders", async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const root = tempDir('ep-relabel-')
  sortInto(root, listAudio(join(ravdessDir, 'Actor_05')).slice(0, 4), ['no', 'yes'], (f) => basename(f))
  const index = await indexDataset(root)
  t.is(index.layout, 'folders')
  t.deepEqual(index.counts.byLabel, { no: 2, yes: 2 })
})

function labelsOf(items: DatasetItem[]) {
  const out: Record<string, number> = {}
  for (const i of items) out[i.label] = (out[i.label] ?? 0) + 1
  return out
}

test('stratified 80/20 keeps class proportions and is stable for a seed', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const index = await fullIndex()
  const a = splitDataset(index)
  const n = index.items.length
  t.is(a.test.length, Math.ceil(0.2 * n))
  t.is(a.train.length + a.test.length, n)
  const test = labelsOf(a.test)
  const all = labelsOf(index.items)
  for (const [label, count] of Object.entries(all)) t.true(Math.abs(test[label] - count * 0.2) < 1, `${label}: ${test[label]} of ${count}`)
  const paths = (items: DatasetItem[]) => items.map((i) => i.path)
  t.deepEqual(paths(splitDataset(index).test), paths(a.test), 'same seed, same split')
  t.notDeepEqual(paths(splitDataset(index, { seed: 7 }).test), paths(a.test), 'another seed, another split')
  t.is(new Set([...paths(a.train), ...paths(a.test)]).size, n, 'no clip in two parts')
})

test('the reference 1440-clip shape splits 1152/288', (t) => {
  // Synthetic items with RAVDESS's class sizes (96 neutral, 192 others) over 24 actors.
  const items: DatasetItem[] = []
  for (let actor = 1; actor <= 24; actor++) {
    for (let e = 0; e < 8; e++) {
      for (let k = 0; k < (e === 5 ? 4 : 8); k++) {
        items.push({
          path: `a${actor}/e${e}-${k}`,
          label: EMOTIONS[e],
          speaker: `actor_${actor}`,
          hash: `${actor}-${e}-${k}`,
          durationSeconds: 3,
          sampleRate: 48000,
        })
      }
    }
  }
  t.is(items.length, 1440)
  const split = splitDataset(items, { testFraction: 0.2, seed: 42 })
  t.is(split.train.length, 1152)
  t.is(split.test.length, 288)
})

test('speaker splits never share a speaker; named test speakers are honoured; folds partition', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const index = await fullIndex()
  const speakers = (items: DatasetItem[]) => new Set(items.map((i) => i.speaker))
  const s = splitDataset(index, { strategy: 'speaker', testFraction: 0.2, valFraction: 0.1, seed: 3 })
  const [tr, va, te] = [speakers(s.train), speakers(s.val), speakers(s.test)]
  t.is(te.size, 4)
  t.is(va.size, 2)
  for (const sp of te) t.false(tr.has(sp) || va.has(sp))
  for (const sp of va) t.false(tr.has(sp))

  const named = splitDataset(index, { strategy: 'speaker', testSpeakers: ['actor_19', 'actor_20'] })
  t.deepEqual([...speakers(named.test)].sort(), ['actor_19', 'actor_20'])
  const unknown = t.throws(() => splitDataset(index, { strategy: 'speaker', testSpeakers: ['actor_99'] }))
  t.is((unknown as EmotionPipelineError).code, 'INVALID_OPTION')
  t.regex(unknown!.message, /actor_99/)
  // Too few speakers for the fraction asked: the fraction is the option named, not the speaker list.
  const two = index.items.filter((i) => i.speaker === 'actor_01' || i.speaker === 'actor_02')
  const tooFew = t.throws(() => splitDataset(two, { strategy: 'speaker-kfold', folds: 2, fold: 0, valFraction: 0.5, testFraction: 0 }))
  t.regex(tooFew!.message, /^invalid option `valFraction`: is 0\.5: 1 speaker\(s\) requested but only 1 available/)

  for (const strategy of ['kfold', 'speaker-kfold'] as const) {
    const seen = new Map<string, number>()
    for (let fold = 0; fold < 5; fold++) {
      const f = splitDataset(index, { strategy, folds: 5, fold })
      t.is(f.train.length + f.test.length, index.items.length)
      for (const i of f.test) seen.set(i.path, (seen.get(i.path) ?? 0) + 1)
      if (strategy === 'speaker-kfold') for (const sp of speakers(f.test)) t.false(speakers(f.train).has(sp))
    }
    t.is(seen.size, index.items.length, `${strategy}: every clip is tested once`)
    t.true([...seen.values()].every((c) => c === 1))
  }
  const bad = t.throws(() => splitDataset(index, { strategy: 'kfold', folds: 5, fold: 5 }))
  t.regex(bad!.message, /fold/)
})

test('split.json round-trips to the same split', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const split = splitDataset(await fullIndex(), { strategy: 'speaker', testFraction: 0.2 })
  const path = join(tempDir(), 'run', 'split.json')
  saveSplit(split, path)
  t.deepEqual(loadSplit(path), split)
  writeFileSync(path, '{"format":"other"}')
  t.is(t.throws(() => loadSplit(path))!.message.includes('not an emotion-pipeline split'), true)
})

test('the feature cache: a second run reads every clip from disk and gives the same features', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const files = listAudio(join(ravdessDir, 'Actor_06')).slice(0, 24)
  const cacheDir = tempDir('ep-cache-')
  const first = await extractMel(files, { device: 'cpu', cacheDir })
  t.deepEqual(first.cache, { hits: 0, misses: 24, writes: 24 })
  const second = await extractMel(files, { device: 'cpu', cacheDir })
  t.deepEqual(second.cache, { hits: 24, misses: 0, writes: 0 })
  t.deepEqual(Array.from(second.data.subarray(0, 1000)), Array.from(first.data.subarray(0, 1000)))
  t.true(Buffer.from(second.data.buffer).equals(Buffer.from(first.data.buffer)))
  // Other settings → other keys; no temporary files left behind.
  const other = await extractMel(files.slice(0, 2), { device: 'cpu', cacheDir, mel: { nMels: 64 } })
  t.deepEqual(other.cache, { hits: 0, misses: 2, writes: 2 })
  const leftovers = readdirSync(cacheDir, { recursive: true }).filter((f) => String(f).endsWith('.tmp'))
  t.deepEqual(leftovers, [])
  // One batch mixing cached and new clips keeps the input order.
  const fresh = listAudio(join(ravdessDir, 'Actor_08')).slice(0, 8)
  const mixed = fresh.flatMap((f, i) => [files[i], f])
  const withCache = await extractMel(mixed, { device: 'cpu', cacheDir })
  t.deepEqual(withCache.cache, { hits: 8, misses: 8, writes: 8 })
  const without = await extractMel(mixed, { device: 'cpu' })
  t.deepEqual(
    withCache.indices,
    mixed.map((_, i) => i),
  )
  t.true(Buffer.from(withCache.data.buffer).equals(Buffer.from(without.data.buffer)))
})

test('a file name that is not UTF-8 is a problem named by path, and the good clip beside it stays', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const root = tempDir('ep-non-utf8-')
  const clips = listAudio(join(ravdessDir, 'Actor_01'))
  mkdirSync(join(root, 'happy'))
  mkdirSync(join(root, 'sad'))
  copyFileSync(clips[0], join(root, 'happy', 'good.flac'))
  copyFileSync(clips[1], join(root, 'sad', 'also-good.flac'))
  // "bad\xff.flac": the same content as the good clip, under a name that is not UTF-8.
  const bad = Buffer.concat([Buffer.from(join(root, 'happy', 'bad')), Buffer.from([0xff]), Buffer.from('.flac')])
  writeFileSync(bad, readFileSync(clips[0]))
  const index = await indexDataset(root)
  t.deepEqual(index.items.map((i) => i.path.split('/').slice(-2).join('/')).sort(), ['happy/good.flac', 'sad/also-good.flac'])
  t.true(
    index.problems.some((p) => p.kind === 'unreadable' && /not valid UTF-8/.test(p.message)),
    JSON.stringify(index.problems),
  )
  t.deepEqual(index.duplicates, [])
})

test('with dataRoot, manifest entries outside it (absolute, ../, or through a link) are refused by name', async (t) => {
  if (!haveRavdess) return skip(t, NO_DATA)
  const root = tempDir('ep-data-root-')
  const clips = listAudio(join(ravdessDir, 'Actor_01'))
  mkdirSync(join(root, 'clips'))
  copyFileSync(clips[0], join(root, 'clips', 'inside.flac'))
  symlinkSync(clips[1], join(root, 'clips', 'link-out.flac'))
  const outside = join(tempDir('ep-outside-'), 'secret.flac')
  copyFileSync(clips[2], outside)
  const manifest = join(root, 'clips.csv')
  writeFileSync(
    manifest,
    `path,label\nclips/inside.flac,happy\nclips/link-out.flac,sad\n${outside},sad\n../${basename(dirname(outside))}/secret.flac,sad\n`,
  )
  const guarded = await indexDataset(root, { layout: 'manifest', manifest, dataRoot: root })
  t.deepEqual(
    guarded.items.map((i) => basename(i.path)),
    ['inside.flac'],
  )
  t.is(guarded.problems.filter((p) => /resolves outside dataRoot/.test(p.message)).length, 3)
  // Without dataRoot, absolute paths and links work as written.
  const open = await indexDataset(root, { layout: 'manifest', manifest })
  t.is(open.items.length, 4 - open.duplicates.length)
})
