// Jobs over several processes: the world a process belongs to (from torchrun's variables, or given),
// joined through the core's c10d TCPStore, and the local launcher behind `--nproc-per-node N`, which
// starts N copies of the same command with those variables set, each with its share of the cores.
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { availableParallelism } from 'node:os'
import { createServer } from 'node:net'
import { awaitNative, EmotionPipelineError, invalidOption } from './errors.js'
import { loadNative, native, nativeState } from './native.js'
import type { Native } from './native.js'
import type { WorldOptions } from './generated/options.js'

export type { WorldOptions }

/** `distributed`: `'env'` reads torchrun's variables; or the world given outright. */
export type DistributedOption = 'env' | Partial<WorldOptions>

/** A joined world. */
export interface World {
  rank: number
  worldSize: number
  barrier(name: string): Promise<void>
  set(key: string, value: string): Promise<void>
  get(key: string): Promise<string>
  leave(): Promise<void>
  /** Tells the other ranks this one failed, so they stop waiting for it. */
  fail(why: string): void
}

function intVar(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name]
  if (v === undefined || v === '') return undefined
  const n = Number(v)
  if (!Number.isInteger(n) || n < 0) throw invalidOption(name, `must be a whole number, got ${v}`)
  return n
}

/** The world torchrun (or any launcher setting its variables) put this process in; undefined alone. */
export function worldFromEnv(env: NodeJS.ProcessEnv = process.env): Partial<WorldOptions> | undefined {
  const worldSize = intVar(env, 'WORLD_SIZE')
  if (worldSize === undefined || worldSize <= 1) return undefined
  const rank = intVar(env, 'RANK')
  if (rank === undefined) throw invalidOption('RANK', `is not set, but WORLD_SIZE is ${worldSize}`)
  return {
    rank,
    worldSize,
    localRank: intVar(env, 'LOCAL_RANK') ?? rank,
    localWorldSize: intVar(env, 'LOCAL_WORLD_SIZE') ?? worldSize,
    // Unset: the core's defaults (127.0.0.1:29500, as torchrun's).
    masterAddr: env.MASTER_ADDR,
    masterPort: intVar(env, 'MASTER_PORT'),
    agentStore: ['1', 'true', 'True'].includes(env.TORCHELASTIC_USE_AGENT_STORE ?? ''),
    attempt: intVar(env, 'TORCHELASTIC_RESTART_COUNT'),
  }
}

/** The core's handle of each joined world (what `train` hands the native trainer). */
const handles = new WeakMap<World, Native.NativeWorld>()

export function nativeWorldOf(world: World): Native.NativeWorld {
  const handle = handles.get(world)
  if (!handle) throw invalidOption('distributed', 'must be a world from joinWorld()')
  return handle
}

/** Whether `value` is a world joinWorld() returned (rather than options to join one). */
export function isJoinedWorld(value: unknown): value is World {
  return typeof value === 'object' && value !== null && handles.has(value as World)
}

/**
 * The world a data-parallel job trains in: a joined world as it is, else joined here from `option`
 * (`joined`: the caller leaves it) once the Gloo shim is known to be loaded; undefined alone.
 */
export async function trainingWorld(option: DistributedOption | World | undefined): Promise<{ world?: World; joined: boolean }> {
  if (isJoinedWorld(option)) return { world: option, joined: false }
  const wanted = option === 'env' ? worldFromEnv() : option
  if (!wanted || (wanted.worldSize ?? 1) <= 1) return { joined: false }
  loadNative()
  const gloo = nativeState()?.gloo
  if (!gloo?.loaded)
    throw invalidOption(
      'distributed',
      `data-parallel training needs the Gloo shim: ${gloo?.problem ?? 'not loaded'} (see \`emotion-pipeline doctor\`)`,
    )
  return { world: await joinWorld(wanted), joined: true }
}

/** Runs `body` in `world`, telling the other ranks at once when it throws here (they name this rank). */
export async function asRank<T>(world: World | undefined, body: () => Promise<T>): Promise<T> {
  try {
    return await body()
  } catch (err) {
    world?.fail(err instanceof Error ? err.message : String(err))
    throw err
  }
}

/** Joins the world `option` describes, or returns undefined for a job of one process. */
export async function joinWorld(option: DistributedOption | undefined): Promise<World | undefined> {
  if (option === undefined) return undefined
  const world = option === 'env' ? worldFromEnv() : option
  if (!world || (world.worldSize ?? 1) <= 1) return undefined
  const inner = await awaitNative(native.joinWorld(JSON.stringify(world)))
  const joined: World = {
    rank: inner.rank,
    worldSize: inner.worldSize,
    barrier: (name) => awaitNative(inner.barrier(name)),
    set: (key, value) => awaitNative(inner.set(key, value)),
    get: (key) => awaitNative(inner.get(key)),
    leave: () => awaitNative(inner.leave()),
    fail: (why) => inner.fail(why),
  }
  handles.set(joined, inner)
  return joined
}

/** A free TCP port on 127.0.0.1 for the store. */
/** A TCP port free on 127.0.0.1 now (the launcher's store, and the tests' servers). */
export async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer()
    server.once('error', fail)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => done(port))
    })
  })
}

/** Copies `from` to `to` line by line, each line prefixed with `tag` (a line split across chunks stays whole). */
function tagLines(from: NodeJS.ReadableStream, to: NodeJS.WritableStream, tag: string): void {
  let pending = ''
  from.on('data', (d: Buffer) => {
    const lines = (pending + d.toString()).split('\n')
    pending = lines.pop() ?? ''
    for (const line of lines) to.write(`${tag}${line}\n`)
  })
  from.on('end', () => {
    if (pending) to.write(`${tag}${pending}\n`)
  })
}

/**
 * Runs `args` (this CLI's arguments) as `nproc` processes on this machine, ranks 0…nproc−1, each with
 * `OMP_NUM_THREADS` = its share of the cores (unless set). Rank 0's output is the command's; the
 * others' lines are prefixed with their rank. SIGINT and SIGTERM go to every rank; the first rank to
 * fail stops the others; the exit status is the first failure's, or 0.
 */
export async function launchLocal(nproc: number, args: string[]): Promise<number> {
  if (!Number.isInteger(nproc) || nproc < 1 || nproc > 256) throw invalidOption('--nproc-per-node', `must be 1–256, got ${nproc}`)
  const port = await freePort()
  const threads = process.env.OMP_NUM_THREADS ?? String(Math.max(1, Math.floor(availableParallelism() / nproc)))
  const children = Array.from({ length: nproc }, (_, rank) => {
    const env = {
      ...process.env,
      RANK: String(rank),
      WORLD_SIZE: String(nproc),
      LOCAL_RANK: String(rank),
      LOCAL_WORLD_SIZE: String(nproc),
      MASTER_ADDR: '127.0.0.1',
      MASTER_PORT: String(port),
      OMP_NUM_THREADS: threads,
    }
    const stdio: ('ignore' | 'inherit' | 'pipe')[] = rank === 0 ? ['ignore', 'inherit', 'inherit'] : ['ignore', 'pipe', 'pipe']
    const child = spawn(process.execPath, [process.argv[1], ...args], { env, stdio })
    if (rank !== 0) {
      tagLines(child.stdout!, process.stderr, `[rank ${rank}] `)
      tagLines(child.stderr!, process.stderr, `[rank ${rank}] `)
    }
    return child
  })
  const forward = (signal: NodeJS.Signals) => () => {
    for (const child of children) if (child.exitCode === null) child.kill(signal)
  }
  const onInt = forward('SIGINT')
  const onTerm = forward('SIGTERM')
  process.on('SIGINT', onInt)
  process.on('SIGTERM', onTerm)
  let first = -1
  const codes = await new Promise<number[]>((done) => {
    const results: (number | undefined)[] = new Array(nproc).fill(undefined)
    children.forEach((child, rank) => {
      child.on('exit', (code, signal) => {
        results[rank] = code ?? (signal === 'SIGINT' ? 130 : 143)
        if (results[rank] !== 0 && first < 0) first = rank
        // The others stop at their next step (SIGTERM: rank 0 still writes its checkpoint).
        if (results[rank] !== 0) for (const other of children) if (other.exitCode === null) other.kill('SIGTERM')
        if (results.every((r) => r !== undefined)) done(results as number[])
      })
    })
  })
  process.off('SIGINT', onInt)
  process.off('SIGTERM', onTerm)
  if (first < 0) return 0
  console.error(
    `[launcher] rank ${first} stopped first (exit ${codes[first]}); exits: ${codes.map((c, rank) => `rank ${rank} ${c}`).join(', ')}`,
  )
  return codes[first]
}

/** The folds rank `rank` of `worldSize` runs: every `worldSize`-th, starting at its rank. */
export function foldsOfRank(all: number[], rank: number, worldSize: number): number[] {
  return all.filter((_, i) => i % worldSize === rank)
}

let passes = 0

/**
 * A feature pass split across the ranks of `world`: each rank computes every world-size-th input into
 * the shared `cacheDir` (content-addressed, written atomically), then, once all have, reads the whole set
 * from it. Every rank must make the same calls in the same order (the pass is named by its count).
 */
export async function shardedPass<I, T>(
  world: World,
  cacheDir: string | null | undefined,
  inputs: I[],
  run: (inputs: I[]) => Promise<T>,
): Promise<T> {
  if (!cacheDir) throw invalidOption('cacheDir', 'a pass split across processes needs cacheDir, on a filesystem every rank sees')
  const name = `pass/${++passes}`
  await checkShared(world, name, cacheDir)
  await run(inputs.filter((_, i) => i % world.worldSize === world.rank))
  await world.barrier(`${name}/computed`)
  return run(inputs)
}

/** Rank 0 writes a token into `dir`; every rank must read it there, or the folder is not shared. */
async function checkShared(world: World, name: string, dir: string): Promise<void> {
  const file = join(dir, `.shared-check-${world.worldSize}`)
  if (world.rank === 0) {
    const token = randomUUID()
    mkdirSync(dir, { recursive: true })
    writeFileSync(file, token)
    await world.set(`${name}/token`, token)
  }
  const token = await world.get(`${name}/token`)
  const seen = existsSync(file) ? readFileSync(file, 'utf8') : undefined
  await world.barrier(`${name}/checked`)
  if (seen !== token) {
    throw new EmotionPipelineError(
      'DISTRIBUTED',
      `cacheDir ${dir} is not shared: rank ${world.rank} does not see the file rank 0 wrote there; give a folder on a filesystem every rank sees`,
    )
  }
}
