// Progress a person can follow (stages; a line per model with epoch, loss, accuracy and ETA), or JSON
// lines for scripts, or nothing.
import type { PipelineEvent } from './pipeline.js'

export type ProgressMode = 'human' | 'json' | 'quiet'

export function progressPrinter(mode: ProgressMode, stream: NodeJS.WriteStream = process.stderr): (e: PipelineEvent) => void {
  if (mode === 'quiet') return () => {}
  if (mode === 'json') return (e) => stream.write(JSON.stringify(e) + '\n')
  const tty = stream.isTTY === true
  let started = 0
  let firstEpoch = 0
  let live = false
  const line = (text: string, final: boolean) => {
    if (tty) {
      stream.write(`\r\x1b[2K${text}${final ? '\n' : ''}`)
      live = !final
    } else if (final) {
      stream.write(text + '\n')
    }
  }
  const endLive = () => {
    if (live) stream.write('\n')
    live = false
  }
  return (e) => {
    switch (e.type) {
      case 'stage':
        endLive()
        stream.write(`▸ ${e.stage}: ${e.message}\n`)
        break
      case 'features':
        line(`  features ${e.done}/${e.total}`, e.done === e.total)
        break
      case 'download':
        line(
          `  downloading ${e.file} ${(e.done / 1e6).toFixed(1)}${e.total ? ` of ${(e.total / 1e6).toFixed(1)}` : ''} MB`,
          e.total > 0 && e.done === e.total,
        )
        break
      case 'transcribe':
        line(`  transcripts ${e.done}/${e.total} (${e.cached} from the cache)`, e.done === e.total)
        break
      case 'skipped':
        line(`  warning: skipped ${e.path}: ${e.message}`, true)
        break
      case 'start':
        started = Date.now()
        firstEpoch = e.resumedFromEpoch ?? 0
        if (e.resumedFromEpoch !== null && e.resumedFromEpoch >= e.epochs) {
          stream.write(`  ${e.model}: already trained (${e.resumedFromEpoch} epochs), evaluating its checkpoint\n`)
          break
        }
        stream.write(
          `  ${e.model}: ${e.epochs} epochs × ${e.stepsPerEpoch} steps on ${e.device} (${e.precision})${e.resumedFromEpoch !== null ? `, resumed at epoch ${e.resumedFromEpoch + 1}` : ''}\n`,
        )
        break
      case 'step':
        line(`  ${e.model} epoch ${e.epoch} ${bar(e.step / e.steps)} step ${e.step}/${e.steps} loss ${e.loss.toFixed(3)}`, false)
        break
      case 'epochEnd': {
        const r = e.record
        const elapsed = (Date.now() - started) / 1000
        const eta = (elapsed / Math.max(1, r.epoch - firstEpoch)) * (e.epochs - r.epoch)
        const val = r.valAccuracy !== null ? ` val acc ${(r.valAccuracy * 100).toFixed(1)}%` : ''
        line(
          `  ${e.model} epoch ${r.epoch}/${e.epochs} ${bar(r.epoch / e.epochs)} loss ${r.trainLoss.toFixed(3)} acc ${(r.trainAccuracy * 100).toFixed(1)}%${val} ETA ${clock(eta)}`,
          true,
        )
        break
      }
      case 'warning':
        endLive()
        stream.write(`  ⚠ ${e.model}: ${e.message}\n`)
        break
      default:
        break
    }
  }
}

function bar(fraction: number, width = 20): string {
  const n = Math.max(0, Math.min(width, Math.round(fraction * width)))
  return `[${'='.repeat(n)}${' '.repeat(width - n)}]`
}

function clock(seconds: number): string {
  const s = Math.round(seconds)
  return s >= 3600
    ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
    : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
}
