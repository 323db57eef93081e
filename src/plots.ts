// Headless plots as plain SVG (no browser), rasterised to PNG with resvg.
import { Resvg } from '@resvg/resvg-js'
import type { EpochRecord } from './train.js'

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const FONT = 'font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif"'

/** Confusion matrix heatmap: colour by row percentage, each cell labelled with count and percent. */
export function confusionSvg(confusion: number[][], labels: string[], title: string): string {
  const k = labels.length
  const cell = 58
  const left = 110
  const top = 60
  const width = left + k * cell + 20
  const height = top + k * cell + 90
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT}>`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="26" font-size="16" text-anchor="middle" font-weight="bold">${esc(title)}</text>`,
  ]
  confusion.forEach((row, r) => {
    const total = row.reduce((a, b) => a + b, 0) || 1
    row.forEach((count, c) => {
      const share = count / total
      const light = Math.round(255 - share * 200)
      const fill = `rgb(${light},${Math.round(255 - share * 120)},255)`
      const x = left + c * cell
      const y = top + r * cell
      const ink = share > 0.55 ? 'white' : 'black'
      parts.push(
        `<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${fill}" stroke="#ccc"/>`,
        `<text x="${x + cell / 2}" y="${y + cell / 2 - 2}" font-size="14" text-anchor="middle" fill="${ink}">${count}</text>`,
        `<text x="${x + cell / 2}" y="${y + cell / 2 + 14}" font-size="10" text-anchor="middle" fill="${ink}">${(share * 100).toFixed(0)}%</text>`,
      )
    })
    parts.push(`<text x="${left - 8}" y="${top + r * cell + cell / 2 + 4}" font-size="12" text-anchor="end">${esc(labels[r])}</text>`)
  })
  labels.forEach((label, c) => {
    const x = left + c * cell + cell / 2
    const y = top + k * cell + 10
    parts.push(`<text x="${x}" y="${y}" font-size="12" text-anchor="end" transform="rotate(-45 ${x} ${y})">${esc(label)}</text>`)
  })
  parts.push(
    `<text x="${left + (k * cell) / 2}" y="${height - 8}" font-size="12" text-anchor="middle">predicted</text>`,
    `<text x="14" y="${top + (k * cell) / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 14 ${top + (k * cell) / 2})">true</text>`,
    '</svg>',
  )
  return parts.join('\n')
}

interface Series {
  name: string
  values: (number | null)[]
  color: string
}

function panel(
  x0: number,
  y0: number,
  w: number,
  h: number,
  title: string,
  series: Series[],
  epochs: number[],
  yRange?: [number, number],
): string {
  const all = series.flatMap((s) => s.values.filter((v): v is number => v !== null && Number.isFinite(v)))
  let [lo, hi] = yRange ?? [Math.min(...all, 0), Math.max(...all, 1e-9)]
  if (hi - lo < 1e-9) hi = lo + 1
  const n = epochs.length
  const px = (i: number) => x0 + (n <= 1 ? w / 2 : (i / (n - 1)) * w)
  const py = (v: number) => y0 + h - ((v - lo) / (hi - lo)) * h
  const out = [
    `<text x="${x0 + w / 2}" y="${y0 - 10}" font-size="14" text-anchor="middle" font-weight="bold">${esc(title)}</text>`,
    `<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="none" stroke="#888"/>`,
  ]
  for (let t = 0; t <= 4; t++) {
    const v = lo + ((hi - lo) * t) / 4
    out.push(
      `<line x1="${x0}" x2="${x0 + w}" y1="${py(v)}" y2="${py(v)}" stroke="#eee"/>`,
      `<text x="${x0 - 6}" y="${py(v) + 4}" font-size="10" text-anchor="end">${v.toFixed(2)}</text>`,
    )
  }
  const step = Math.max(1, Math.ceil(n / 10))
  epochs.forEach((e, i) => {
    if (i % step === 0 || i === n - 1) out.push(`<text x="${px(i)}" y="${y0 + h + 14}" font-size="10" text-anchor="middle">${e}</text>`)
  })
  out.push(`<text x="${x0 + w / 2}" y="${y0 + h + 30}" font-size="11" text-anchor="middle">epoch</text>`)
  series.forEach((s, k) => {
    const pts = s.values
      .map((v, i) => (v === null || !Number.isFinite(v) ? null : `${px(i).toFixed(1)},${py(v).toFixed(1)}`))
      .filter(Boolean)
    if (pts.length) out.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${s.color}" stroke-width="2"/>`)
    out.push(
      `<rect x="${x0 + 10}" y="${y0 + 8 + k * 16}" width="12" height="3" fill="${s.color}"/>`,
      `<text x="${x0 + 28}" y="${y0 + 13 + k * 16}" font-size="11">${esc(s.name)}</text>`,
    )
  })
  return out.join('\n')
}

/** Loss and accuracy per epoch, train and validation. */
export function curvesSvg(history: EpochRecord[], title: string): string {
  const epochs = history.map((h) => h.epoch)
  const width = 860
  const height = 330
  const loss: Series[] = [
    { name: 'train loss', values: history.map((h) => h.trainLoss), color: '#1f77b4' },
    { name: 'val loss', values: history.map((h) => h.valLoss), color: '#ff7f0e' },
  ]
  const acc: Series[] = [
    { name: 'train accuracy', values: history.map((h) => h.trainAccuracy), color: '#1f77b4' },
    { name: 'val accuracy', values: history.map((h) => h.valAccuracy), color: '#ff7f0e' },
  ]
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT}>`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="22" font-size="16" text-anchor="middle" font-weight="bold">${esc(title)}</text>`,
    panel(
      60,
      60,
      330,
      210,
      'loss',
      loss.filter((s) => s.values.some((v) => v !== null)),
      epochs,
    ),
    panel(
      480,
      60,
      330,
      210,
      'accuracy',
      acc.filter((s) => s.values.some((v) => v !== null)),
      epochs,
      [0, 1],
    ),
    '</svg>',
  ].join('\n')
}

export function svgToPng(svg: string): Buffer {
  const resvg = new Resvg(svg, { background: 'white', fitTo: { mode: 'zoom', value: 2 }, font: { loadSystemFonts: true } })
  return Buffer.from(resvg.render().asPng())
}
