// The CLI commands' flag parser: node:util's parseArgs, with an unknown flag answered by the nearest
// one the command takes ("did you mean --epochs?").
import { type ParseArgsConfig, parseArgs } from 'node:util'
import { closest } from './errors.js'

export function parseCommandArgs<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    const flag = e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? /Unknown option '(--?[^']+)'/.exec(e.message)?.[1] : undefined
    if (flag) {
      const near = closest(flag.replace(/^-+/, ''), Object.keys(config.options ?? {}))
      e.message = `unknown option ${flag}${near ? ` (did you mean --${near}?)` : ''}; --help lists the options`
    }
    throw err
  }
}
