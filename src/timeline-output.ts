// A timeline as files a person uses: CSV (one row per window), and an SVG plot of emotion over time
// (stacked probabilities of speech windows, the leading label as a coloured strip, non-speech grey).
import type { Timeline } from './generated/results.js'

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const FONT = 'font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif"'
/** Tableau 10: distinguishable, colour-blind aware. */
const COLOURS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac']
const colour = (i: number) => COLOURS[i % COLOURS.length]

/** A CSV field: quoted when it holds a comma, a quote or a line break. */
function csvCell(value: string | number | boolean): string {
  const text = String(value)
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text
}

/** `start,end,speech,voiced,label,<one probability column per label>`; non-speech rows leave label and probabilities empty. */
export function timelineCsv(timeline: Timeline): string {
  const head = ['start', 'end', 'speech', 'voiced', 'label', ...timeline.labels]
  const rows = timeline.segments.map((s) => [
    s.start.toFixed(3),
    s.end.toFixed(3),
    s.speech,
    s.voiced.toFixed(3),
    s.label ?? '',
    ...timeline.labels.map((_, i) => (s.speech && s.probabilities ? s.probabilities[i].toFixed(5) : '')),
  ])
  return `${[head, ...rows].map((r) => r.map(csvCell).join(',')).join('\n')}\n`
}

/** Emotion over time: each window's slice shows its probabilities stacked in label order, its leading label in the strip above. */
export function timelineSvg(timeline: Timeline, title = 'Emotion over time'): string {
  const [left, top, plotW, plotH, strip] = [70, 50, 900, 240, 18]
  const width = left + plotW + 170
  const height = top + strip + 8 + plotH + 60
  const seconds = Math.max(timeline.seconds, 1e-6)
  const x = (t: number) => left + (t / seconds) * plotW
  const yTop = top + strip + 8
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT}>`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left + plotW / 2}" y="26" font-size="16" text-anchor="middle" font-weight="bold">${esc(title)}</text>`,
    `<rect x="${left}" y="${yTop}" width="${plotW}" height="${plotH}" fill="#f4f4f4"/>`,
  ]
  // Each window owns the time from midway after the previous centre to midway before the next (the
  // first and last reach the ends): the slices tile the recording.
  const centres = timeline.segments.map((s) => (s.start + s.end) / 2)
  timeline.segments.forEach((s, k) => {
    const from = k === 0 ? 0 : (centres[k - 1] + centres[k]) / 2
    const to = k === timeline.segments.length - 1 ? seconds : (centres[k] + centres[k + 1]) / 2
    const [x0, w] = [x(from), Math.max(0.5, x(to) - x(from))]
    if (!s.speech || !s.probabilities) {
      parts.push(`<rect x="${x0}" y="${top}" width="${w}" height="${strip}" fill="#d9d9d9"/>`)
      return
    }
    parts.push(`<rect x="${x0}" y="${top}" width="${w}" height="${strip}" fill="${colour(s.labelIndex ?? 0)}"/>`)
    let y = yTop + plotH
    s.probabilities.forEach((p, i) => {
      const h = p * plotH
      y -= h
      if (h > 0.2) parts.push(`<rect x="${x0}" y="${y.toFixed(2)}" width="${w}" height="${h.toFixed(2)}" fill="${colour(i)}"/>`)
    })
  })
  // Axes: probability on the left, seconds (or minutes) below.
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    const y = yTop + plotH - p * plotH
    parts.push(`<line x1="${left - 4}" y1="${y}" x2="${left}" y2="${y}" stroke="black"/>`)
    parts.push(`<text x="${left - 8}" y="${y + 4}" font-size="11" text-anchor="end">${p}</text>`)
  }
  const minutes = seconds > 180
  const step = niceStep(minutes ? seconds / 60 : seconds)
  for (let t = 0; t <= (minutes ? seconds / 60 : seconds) + 1e-9; t += step) {
    const at = x(minutes ? t * 60 : t)
    parts.push(`<line x1="${at}" y1="${yTop + plotH}" x2="${at}" y2="${yTop + plotH + 4}" stroke="black"/>`)
    parts.push(`<text x="${at}" y="${yTop + plotH + 18}" font-size="11" text-anchor="middle">${+t.toFixed(2)}</text>`)
  }
  parts.push(
    `<text x="${left + plotW / 2}" y="${yTop + plotH + 40}" font-size="12" text-anchor="middle">${minutes ? 'minutes' : 'seconds'}</text>`,
    `<text x="18" y="${yTop + plotH / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 18 ${yTop + plotH / 2})">probability</text>`,
    `<text x="${left - 8}" y="${top + 13}" font-size="11" text-anchor="end">label</text>`,
  )
  const legend = [...timeline.labels.map((l, i) => [l, colour(i)]), ['no speech', '#d9d9d9']]
  legend.forEach(([label, fill], i) => {
    const y = top + i * 20
    parts.push(`<rect x="${left + plotW + 20}" y="${y}" width="14" height="14" fill="${fill}"/>`)
    parts.push(`<text x="${left + plotW + 40}" y="${y + 12}" font-size="12">${esc(label)}</text>`)
  })
  parts.push('</svg>')
  return parts.join('\n')
}

/** 1, 2 or 5 × a power of ten giving 5–10 ticks. */
function niceStep(span: number): number {
  const raw = span / 8
  const base = 10 ** Math.floor(Math.log10(raw || 1))
  return [1, 2, 5, 10].map((m) => m * base).find((s) => span / s <= 10) ?? 10 * base
}
