#!/usr/bin/env node
// Writes src/generated/{options,results}.ts from the JSON Schemas of the Rust types
// (crates/emotion-core/schema/*.schema.json, kept current by crates/emotion-core/tests/schema.rs): one
// interface or union per type, each field's doc comment and `@default` carried over. An option with a
// default is optional, because the core fills it in; results list every field. Types of the results
// that are options too are imported, not repeated. `--check` only compares (exit 1 when stale).
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const root = join(import.meta.dirname, '..')
const schemaPath = (name) => join(root, 'crates', 'emotion-core', 'schema', `${name}.schema.json`)
const outPath = (name) => join(root, 'src', 'generated', `${name}.ts`)

/** String enums that TypeScript also needs as values, and the constant that lists them. */
const RUNTIME_LISTS = { ErrorCode: 'ERROR_CODES' }

/** Option types a results file refers to: every field is present there, defaults filled in. */
let resolvedOptions = new Set()

function refName(ref) {
  const name = ref.replace('#/$defs/', '')
  return resolvedOptions.has(name) ? `Required<${name}>` : name
}

/** A TypeScript type for a schema node. */
function typeOf(node) {
  if (node.$ref) return refName(node.$ref)
  if (node.const !== undefined) return JSON.stringify(node.const).replaceAll('"', "'")
  if (node.enum) return node.enum.map((v) => (v === null ? 'null' : `'${v}'`)).join(' | ')
  const union = node.anyOf ?? node.oneOf
  if (union) return union.map(typeOf).join(' | ')
  if (node.type === 'object' && node.properties) return `{ ${objectFields(node).join('; ')} }`
  const types = Array.isArray(node.type) ? node.type : [node.type]
  return types
    .map((t) => {
      switch (t) {
        case 'string':
          return 'string'
        case 'integer':
        case 'number':
          return 'number'
        case 'boolean':
          return 'boolean'
        case 'null':
          return 'null'
        case 'array': {
          if (node.prefixItems) return `[${node.prefixItems.map(typeOf).join(', ')}]`
          if (node.minItems !== undefined && node.minItems === node.maxItems && node.minItems <= 4)
            return `[${Array(node.minItems).fill(typeOf(node.items)).join(', ')}]`
          const item = typeOf(node.items)
          return /[| ]/.test(item) ? `(${item})[]` : `${item}[]`
        }
        case 'object':
          return node.additionalProperties ? `Record<string, ${typeOf(node.additionalProperties)}>` : 'Record<string, unknown>'
        default:
          throw new Error(`gen-types: unsupported schema type ${JSON.stringify(node)}`)
      }
    })
    .join(' | ')
}

/** `name?: type` for each property; optional when not required or when the core has a default. */
function objectFields(node) {
  const required = new Set(node.required ?? [])
  return Object.entries(node.properties).map(
    ([key, prop]) => `${key}${!required.has(key) || 'default' in prop ? '?' : ''}: ${typeOf(prop)}`,
  )
}

function docComment(lines, indent) {
  const text = lines.filter(Boolean).join('\n').trim()
  if (!text) return []
  const body = text.split('\n')
  if (body.length === 1) return [`${indent}/** ${body[0]} */`]
  return [`${indent}/**`, ...body.map((l) => `${indent} *${l ? ` ${l}` : ''}`), `${indent} */`]
}

const isPlainObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v)

function formatDefault(value) {
  return JSON.stringify(value).replaceAll('"', "'").replaceAll(',', ', ')
}

function emitDef(name, def) {
  const out = []
  if (def.type === 'object' && def.properties) {
    out.push(...docComment([def.description], ''))
    out.push(`export interface ${name} {`)
    const required = new Set(def.required ?? [])
    for (const [key, prop] of Object.entries(def.properties)) {
      const doc = [prop.description]
      if ('default' in prop) doc.push(`@default ${formatDefault(prop.default)}`)
      out.push(...docComment(doc, '  '))
      const optional = !required.has(key) || 'default' in prop
      out.push(`  ${key}${optional ? '?' : ''}: ${typeOf(prop)}`)
    }
    out.push('}')
    return out
  }
  // A tagged union of objects (an internally tagged Rust enum): one inline object type per variant.
  const union = def.oneOf ?? def.anyOf
  if (union?.some((v) => v.type === 'object')) {
    out.push(...docComment([def.description], ''))
    out.push(`export type ${name} =`)
    for (const v of union) out.push(`  | ${typeOf(v)}`)
    return out
  }
  // A string enum: variants with their own doc comments become a documented union.
  const variants = (def.oneOf ?? def.anyOf ?? [def]).flatMap((v) =>
    v.enum ? v.enum.map((e) => ({ value: e })) : [{ value: v.const, doc: v.description }],
  )
  const notes = variants.filter((v) => v.doc).map((v) => `- \`'${v.value}'\`: ${v.doc}`)
  out.push(...docComment([def.description, ...(notes.length ? ['', ...notes] : [])], ''))
  out.push(`export type ${name} = ${variants.map((v) => `'${v.value}'`).join(' | ')}`)
  if (RUNTIME_LISTS[name]) {
    out.push('', `/** Every \`${name}\`, for checks at run time. */`)
    out.push(`export const ${RUNTIME_LISTS[name]}: readonly ${name}[] = [${variants.map((v) => `'${v.value}'`).join(', ')}]`)
  }
  return out
}

/** The text of src/generated/<name>.ts; `imported` are types another generated file defines. */
function generateFile(name, imported = new Set()) {
  const schema = JSON.parse(readFileSync(schemaPath(name), 'utf8'))
  const defs = Object.entries(schema.$defs).sort(([a], [b]) => a.localeCompare(b))
  const own = defs.filter(([n]) => !imported.has(n))
  resolvedOptions = new Set(imported.objects ?? [])
  const body = own.flatMap(([n, def]) => ['', ...emitDef(n, def)])
  const used = [...imported].filter((n) => body.some((l) => new RegExp(`\\b${n}\\b`).test(l))).sort()
  // The defaults as values too, so help texts and docs print them instead of restating them.
  const defaults = Object.fromEntries(
    own
      .filter(([, def]) => def.type === 'object' && def.properties)
      .map(([n, def]) => [
        n,
        Object.fromEntries(
          Object.entries(def.properties)
            .filter(([, p]) => 'default' in p && !isPlainObject(p.default))
            .map(([k, p]) => [k, p.default]),
        ),
      ])
      .filter(([, d]) => Object.keys(d).length > 0),
  )
  if (Object.keys(defaults).length > 0) {
    body.push('', '/** The default of every option that has one, by type: the values the core fills in. */')
    body.push(`export const DEFAULTS = ${JSON.stringify(defaults, null, 2).replaceAll('"', "'")} as const`)
  }
  if (name === 'options') {
    // What each preset fills in (crates/emotion-core/src/train/preset.rs, via schema/presets.json).
    const presets = JSON.parse(readFileSync(join(root, 'crates', 'emotion-core', 'schema', 'presets.json'), 'utf8'))
    body.push('', "/** What each preset fills in where the options leave it unset (the core's `train::preset`). */")
    body.push(`export const PRESETS = ${JSON.stringify(presets, null, 2).replaceAll('"', "'")} as const`)
    // The inputs each model kind reads (crates/emotion-core/src/train/kinds, via schema/kinds.json).
    const kinds = JSON.parse(readFileSync(join(root, 'crates', 'emotion-core', 'schema', 'kinds.json'), 'utf8'))
    body.push('', "/** The inputs each model kind reads (the core's `train::kinds`): what the pipeline extracts for it. */")
    body.push(`export const MODEL_INPUTS = ${JSON.stringify(kinds, null, 2).replaceAll('"', "'")} as const`)
  }
  const lines = [
    `// Generated by scripts/gen-types.mjs from crates/emotion-core/schema/${name}.schema.json (the Rust`,
    '// types). Do not edit: change the Rust type, then regenerate (see docs/DESIGN.md).',
    ...(used.length ? ['', `import type { ${used.join(', ')} } from './options.js'`] : []),
    ...body,
  ]
  const names = new Set(own.map(([n]) => n))
  names.objects = own.filter(([, def]) => def.type === 'object').map(([n]) => n)
  return { text: `${lines.join('\n')}\n`, names }
}

export function generate() {
  const options = generateFile('options')
  const results = generateFile('results', options.names)
  return { options: options.text, results: results.text }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const [name, text] of Object.entries(generate())) {
    const out = outPath(name)
    if (process.argv.includes('--check')) {
      let current = ''
      try {
        current = readFileSync(out, 'utf8')
      } catch {}
      if (current !== text) {
        console.error(`${out} is out of date: run node scripts/gen-types.mjs`)
        process.exit(1)
      }
    } else {
      writeFileSync(out, text)
    }
  }
}
