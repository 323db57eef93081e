// Ctrl-C (SIGINT) and SIGTERM (what containers and process managers send) stop a long command the same
// way: at the next step, with a resumable checkpoint. The exit status says which signal it was.
let received: NodeJS.Signals | undefined

/** Aborts `controller` on SIGINT or SIGTERM, saying `message` on stderr; returns the clean-up. */
export function stopOnSignals(controller: AbortController, message: string): () => void {
  const onSignal = (signal: NodeJS.Signals) => {
    received = signal
    process.stderr.write(`\n${signal}: ${message}\n`)
    controller.abort()
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  return () => {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

/** The exit status of a cancelled command: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM). */
export function cancelledExitCode(): number {
  return received === 'SIGTERM' ? 143 : 130
}
