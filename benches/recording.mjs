// A long recording made of real clips with gaps of noise or room tone between them, at a stated SNR,
// and the scores of a timeline on it: shared by the timeline test and `npm run bench:vad`.

/** Deterministic uniform numbers in [0, 1). */
function rng(seed) {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

const rms = (xs) => Math.sqrt(xs.reduce((a, x) => a + x * x, 0) / Math.max(1, xs.length))

/**
 * Concatenates `clips` (Float32Array at `rate`) with `gapSeconds` between them (and before the first
 * and after the last) filled with noise whose RMS is the clips' RMS minus `snrDb`: `'white'` noise,
 * or `'room'` tone (the first 0.25 s of each clip, the studio's own silence, tiled in random order
 * and scaled to the SNR). The clips themselves are untouched. Returns the samples, the clips' spans
 * and the gaps' spans in seconds.
 */
export function concatenate(clips, { rate, gapSeconds = 2.5, snrDb = 20, noise = 'white', seed = 1 }) {
  const gap = Math.round(gapSeconds * rate)
  const total = clips.reduce((n, c) => n + c.length + gap, gap)
  const out = new Float32Array(total)
  const speech = rms(clips.flatMap((c) => Array.from(c)))
  const level = speech / 10 ** (snrDb / 20)
  const next = rng(seed)
  if (noise === 'white') {
    // Box–Muller: Gaussian white noise.
    for (let i = 0; i < total; i++) out[i] = level * Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next())
  } else {
    const pieces = clips.map((c) => c.subarray(0, Math.round(0.25 * rate)))
    const pieceRms = rms(pieces.flatMap((p) => Array.from(p))) || 1
    for (let at = 0; at < total; ) {
      const p = pieces[Math.floor(next() * pieces.length)]
      for (let i = 0; i < p.length && at < total; i++, at++) out[at] = (p[i] / pieceRms) * level
    }
  }
  const spans = []
  const gaps = []
  let at = 0
  for (const clip of clips) {
    gaps.push({ start: at / rate, end: (at + gap) / rate })
    at += gap
    out.set(clip, at)
    spans.push({ start: at / rate, end: (at + clip.length) / rate })
    at += clip.length
  }
  gaps.push({ start: at / rate, end: (at + gap) / rate })
  return { samples: out, spans, gaps, speechRms: speech, noiseRms: level }
}

/** The part of a recording each window speaks for: from midway after the previous window's centre to
 * midway before the next one's (the first from 0, the last to the end), so the parts tile the recording. */
function owned(timeline) {
  const n = timeline.segments.length
  const centres = timeline.segments.map((s) => (s.start + s.end) / 2)
  return timeline.segments.map((s, k) => ({
    ...s,
    from: k === 0 ? 0 : (centres[k - 1] + centres[k]) / 2,
    to: k === n - 1 ? timeline.seconds : (centres[k] + centres[k + 1]) / 2,
  }))
}

const overlap = (a, b) => Math.max(0, Math.min(a.end, b.to) - Math.max(a.start, b.from))

/**
 * Each clip's timeline label (the label over most of its span; null when no speech window covers it),
 * seconds of gap labelled, seconds of clip left unlabelled.
 */
export function scoreTimeline(timeline, spans, gaps) {
  const slices = owned(timeline)
  const clipLabels = spans.map((span) => {
    const time = new Map()
    for (const s of slices) if (s.speech && s.label) time.set(s.label, (time.get(s.label) ?? 0) + overlap(span, s))
    const best = [...time.entries()].filter(([, t]) => t > 0).sort((a, b) => b[1] - a[1])[0]
    return best ? best[0] : null
  })
  const labelled = (span) => slices.filter((s) => s.speech).reduce((a, s) => a + overlap(span, s), 0)
  const gapSeconds = gaps.reduce((a, g) => a + g.end - g.start, 0)
  const clipSeconds = spans.reduce((a, c) => a + c.end - c.start, 0)
  return {
    clipLabels,
    gapSeconds,
    gapLabelledSeconds: gaps.reduce((a, g) => a + labelled(g), 0),
    clipSeconds,
    clipUnlabelledSeconds: clipSeconds - spans.reduce((a, c) => a + labelled(c), 0),
  }
}
