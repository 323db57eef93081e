#!/usr/bin/env node
// Lint step: no import cycles among the TypeScript modules of src/ (relative imports, `import type`
// included) nor among the Rust modules of the core (`crate::` and `super::` paths, test modules left
// out). Prints each cycle found and exits 1.
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'

const root = join(import.meta.dirname, '..')

function walk(dir, ext) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name), ext) : e.name.endsWith(ext) ? [join(dir, e.name)] : [],
  )
}

/** Strongly connected components with more than one member (Tarjan). */
function cycles(graph) {
  let next = 0
  const index = new Map()
  const low = new Map()
  const stack = []
  const onStack = new Set()
  const found = []
  const visit = (v) => {
    index.set(v, next)
    low.set(v, next++)
    stack.push(v)
    onStack.add(v)
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v), low.get(w)))
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), index.get(w)))
    }
    if (low.get(v) === index.get(v)) {
      const component = []
      let w
      do {
        w = stack.pop()
        onStack.delete(w)
        component.push(w)
      } while (w !== v)
      if (component.length > 1) found.push(component.sort())
    }
  }
  for (const v of graph.keys()) if (!index.has(v)) visit(v)
  return found
}

function typeScriptGraph() {
  const src = join(root, 'src')
  const files = walk(src, '.ts').filter((f) => !f.includes(`${join('src', 'generated')}`))
  const graph = new Map()
  for (const file of files) {
    const text = readFileSync(file, 'utf8')
    // `import … from './x.js'`, `export … from "./x.js"` and side-effect `import './x.js'`.
    const targets = [...text.matchAll(/^(?:import|export)\s(?:[^'"]*?from\s+)?['"](\.[^'"]+)\.js['"]/gm)].map((m) =>
      relative(src, join(file, '..', `${m[1]}.ts`)),
    )
    graph.set(
      relative(src, file),
      targets.filter((t) => files.includes(join(src, t))),
    )
  }
  return graph
}

/** `a::{b::{c, d}, e}` → `a::b::c`, `a::b::d`, `a::e` (aliases and `self` dropped). */
function expandUse(tree) {
  const open = tree.indexOf('{')
  if (open < 0) return [tree.replace(/as[A-Za-z_0-9]+$/, '').replace(/::self$/, '')]
  const prefix = tree.slice(0, open)
  const inner = tree.slice(open + 1, tree.lastIndexOf('}'))
  const parts = []
  let depth = 0
  let start = 0
  for (let i = 0; i < inner.length; i++) {
    if (inner[i] === '{') depth++
    else if (inner[i] === '}') depth--
    else if (inner[i] === ',' && depth === 0) {
      parts.push(inner.slice(start, i))
      start = i + 1
    }
  }
  parts.push(inner.slice(start))
  return parts.filter((p) => p !== '').flatMap((p) => expandUse(p === 'self' ? prefix.replace(/::$/, '') : `${prefix}${p}`))
}

function rustGraph() {
  const src = join(root, 'crates', 'emotion-core', 'src')
  const modOf = (file) => {
    const path = relative(src, file)
      .replace(/\.rs$/, '')
      .replace(/\/mod$/, '')
      .replaceAll('/', '::')
    return path === 'lib' ? '' : path
  }
  const files = walk(src, '.rs')
  const modules = new Set(files.map(modOf))
  const resolve = (path) => {
    const parts = path.split('::')
    while (parts.length) {
      const m = parts.join('::')
      if (modules.has(m)) return m
      parts.pop()
    }
    return null
  }
  const graph = new Map()
  for (const file of files) {
    const self = modOf(file)
    const text = readFileSync(file, 'utf8').split('#[cfg(test)]')[0]
    // `super` of a module (mod.rs or not) is the path without its last segment.
    const parent = self.split('::').slice(0, -1).join('::')
    const paths = [
      // Paths used inline (`crate::a::b::f()`), and every path of each `use crate::…;` / `use super::…;`
      // statement with its braces expanded (`use crate::{a::{b, c}, d};`).
      ...[...text.matchAll(/(?<!use\s)\bcrate::([a-z_0-9]+(?:::[a-z_0-9]+)*)/g)].map((m) => m[1]),
      ...[...text.matchAll(/\buse\s+(crate|super)::([^;]+);/g)].flatMap((m) =>
        expandUse(m[2].replace(/\s+/g, '')).map((path) => (m[1] === 'crate' ? path : parent ? `${parent}::${path}` : path)),
      ),
      ...[...text.matchAll(/(?<!use\s)\bsuper::([a-z_0-9]+(?:::[a-z_0-9]+)*)/g)].map((m) => (parent ? `${parent}::${m[1]}` : m[1])),
    ]
    const targets = new Set(paths.map(resolve).filter((m) => m !== null && m !== self))
    graph.set(self || 'lib', [...targets])
  }
  return graph
}

const problems = [
  ...cycles(typeScriptGraph()).map((c) => `TypeScript import cycle: ${c.join(' → ')}`),
  ...cycles(rustGraph()).map((c) => `Rust module cycle (emotion-core): ${c.join(' → ')}`),
]
for (const p of problems) console.error(`[cycles] ${p}`)
if (problems.length) process.exit(1)
console.error('[cycles] no import cycles in src/ or emotion-core')
