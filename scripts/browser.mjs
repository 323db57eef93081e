// The headless browser the export page's test drives: Debian's chromium (Puppeteer's own browser
// download needs the internet, which CI lacks). setup installs it with apt-get when it can (root, apt
// present); elsewhere the test skips with a message. EMOTION_PIPELINE_NO_BROWSER=1 skips the install.
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome']

export function findChromium() {
  return [process.env.CHROMIUM_PATH, ...CANDIDATES].find((p) => p && existsSync(p))
}

/** Installs Debian's chromium once when missing; logs why not when it cannot. */
export function ensureChromium(log) {
  if (findChromium() || process.env.EMOTION_PIPELINE_NO_BROWSER === '1') return
  const root = process.getuid?.() === 0
  if (!root || !existsSync('/usr/bin/apt-get')) {
    log('no chromium: the browser-page test will skip (install chromium, or set CHROMIUM_PATH)')
    return
  }
  log("installing Debian's chromium for the browser-page test (once, ~300 MB)…")
  try {
    const opts = { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }
    execFileSync('apt-get', ['update', '-qq'], opts)
    execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'chromium'], opts)
  } catch (err) {
    log(`chromium could not be installed (${err.message.split('\n')[0]}): the browser-page test will skip`)
  }
}
