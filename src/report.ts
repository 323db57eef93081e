// Files of a run directory: metrics.json, history.csv, plots (SVG + PNG) and report.md.
import { writeFileAtomic } from './run-dir.js'
import { join } from 'node:path'
import { confusionSvg, curvesSvg, svgToPng } from './plots.js'
import type { Metrics, TrainResult } from './train.js'

/** The published reference this library reproduces (test accuracy, random stratified 80/20). */
export const REFERENCE_ACCURACY = { audio: 0.6928, text: 0.1312, fusion: 0.6014 } as const

/**
 * The recommended recipe's accuracy on unseen speakers: 5-fold speaker cross-validation of its model
 * on RAVDESS actors 1–20 (docs/RESULTS.md, which a test keeps in agreement with this), by the
 * precision of the encoder states (`encoderPrecision: 'auto'` is bf16 on CPUs with native bf16).
 */
export const RECOMMENDED_SPEAKER_CV = {
  model: 'encoder',
  accuracy: {
    bf16: { mean: 0.7305857740585775, std: 0.05925877189319443 },
    fp32: { mean: 0.7305822873082287, std: 0.05824886671736748 },
  },
  folds: 5,
  epochs: 100,
  source: 'docs/RESULTS.md',
} as const

/** Seconds spent in training epochs, over every session of a resumed run (`TrainResult.seconds` is this call's). */
export function trainingSeconds(result: TrainResult): number {
  return result.history.reduce((sum, h) => sum + h.seconds, 0)
}

export function writeHistoryCsv(path: string, results: Record<string, TrainResult>): void {
  const rows = ['model,epoch,trainLoss,trainAccuracy,valLoss,valAccuracy,valF1,lr,seconds,skippedSteps']
  for (const [model, r] of Object.entries(results)) {
    for (const h of r.history) {
      rows.push(
        [
          model,
          h.epoch,
          h.trainLoss,
          h.trainAccuracy,
          h.valLoss ?? '',
          h.valAccuracy ?? '',
          h.valF1 ?? '',
          h.lr,
          h.seconds.toFixed(3),
          h.skippedSteps,
        ].join(','),
      )
    }
  }
  writeFileAtomic(path, rows.join('\n') + '\n')
}

/** Writes `confusion-<model>.svg/png` and `loss-<model>.svg/png`; returns the file names. */
export function writePlots(dir: string, model: string, result: TrainResult, metrics: Metrics | null): string[] {
  const files: string[] = []
  const write = (name: string, svg: string) => {
    writeFileAtomic(join(dir, `${name}.svg`), svg)
    writeFileAtomic(join(dir, `${name}.png`), svgToPng(svg))
    files.push(`${name}.svg`, `${name}.png`)
  }
  if (metrics) {
    const title = `${model} model: test accuracy ${(metrics.accuracy * 100).toFixed(2)}% (${metrics.count} clips)`
    write(`confusion-${model}`, confusionSvg(metrics.confusion, result.labels, title))
  }
  write(`loss-${model}`, curvesSvg(result.history, `${model} model: loss and accuracy per epoch`))
  return files
}

function clock(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)} s`
  const s = Math.round(seconds)
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`
  const m = Math.round(s / 60)
  return `${Math.floor(m / 60)} h ${m % 60} min`
}
/** A value in a markdown table cell: a `|` or a line break (a label from a folder name may hold one) cannot end the cell or the row. */
export const mdCell = (text: string) =>
  text
    .replace(/\\/g, '\\\\')
    .replace(/\|/g, '\\|')
    .replace(/[\r\n]+/g, ' ')

const pct = (x: number | null | undefined) => (x === null || x === undefined ? '—' : `${(x * 100).toFixed(2)} %`)

export interface ReportInput {
  results: Record<string, TrainResult>
  split: { strategy: string; train: number; val: number; test: number; seed: number }
  device: string
  machine: string
  stageSeconds: Record<string, number>
  transcripts: string
  notes: string[]
  /** The data is RAVDESS (indexed by its names): the published reference and its attribution apply. */
  ravdess: boolean
}

export function reportMarkdown(r: ReportInput): string {
  const models = Object.keys(r.results)
  const lines = [
    '# emotion-pipeline run',
    '',
    `Split: ${r.split.strategy} (seed ${r.split.seed}), ${r.split.train} train / ${r.split.val} validation / ${r.split.test} test clips. ` +
      `Device: ${r.device} (${r.machine}). Transcripts: ${r.transcripts}.`,
    '',
    `| model | test accuracy | weighted F1 | weighted precision | weighted recall | UAR |${r.ravdess ? ' reference accuracy |' : ''} epochs | train time |`,
    `|---|---|---|---|---|---|${r.ravdess ? '---|' : ''}---|---|`,
  ]
  for (const m of models) {
    const res = r.results[m]
    const t = res.test
    const ref = r.ravdess ? ` ${pct(REFERENCE_ACCURACY[m as keyof typeof REFERENCE_ACCURACY])} |` : ''
    lines.push(
      `| ${m} | ${pct(t?.accuracy)} | ${pct(t?.weightedF1)} | ${pct(t?.weightedPrecision)} | ${pct(t?.weightedRecall)} | ${pct(t?.uar)} |${ref} ${res.history.length} | ${clock(trainingSeconds(res))} |`,
    )
  }
  if (r.ravdess)
    lines.push('', 'Reference: the published RAVDESS pipeline (audio 69.28 %, text 13.12 %, fusion 60.14 %, random stratified 80/20).', '')
  else lines.push('')
  lines.push("Train time is the sum of the epochs' wall time (over every session when a run was resumed).", '')
  lines.push('## Time per stage (this session)', '', '| stage | seconds |', '|---|---|')
  for (const [stage, s] of Object.entries(r.stageSeconds)) lines.push(`| ${stage} | ${s.toFixed(1)} |`)
  for (const m of models) {
    lines.push('', `## ${m}`, '')
    if (r.results[m].test) lines.push(`![confusion matrix](confusion-${m}.png)`, '')
    lines.push(`![loss and accuracy](loss-${m}.png)`, '')
    const t = r.results[m].test
    if (t) {
      lines.push('| class | precision | recall | F1 | support |', '|---|---|---|---|---|')
      for (const c of t.perClass)
        lines.push(`| ${mdCell(c.label)} | ${pct(c.precision)} | ${pct(c.recall)} | ${pct(c.f1)} | ${c.support} |`)
    }
  }
  if (r.notes.length) lines.push('', '## Notes', '', ...r.notes.map((n) => `- ${n}`))
  if (r.ravdess) lines.push('', 'Data: RAVDESS (Livingstone & Russo 2018, doi:10.1371/journal.pone.0196391), CC BY-NC-SA 4.0.', '')
  return lines.join('\n')
}
