/** Word tokeniser of the text branch: lower-case, punctuation stripped, vocabulary from training text only. */

export const PAD = '<pad>'
export const UNK = '<unk>'

export function words(text: string): string[] {
  return text
    .toLowerCase()
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/[^\p{L}\p{N}'\s]/gu, ' ')
    .replace(/'/g, '')
    .split(/\s+/)
    .filter(Boolean)
}

export class Tokenizer {
  readonly index: Map<string, number>

  /** `vocabulary[0]` is `<pad>`, `vocabulary[1]` `<unk>`. */
  constructor(
    readonly vocabulary: string[],
    readonly maxLength = 6,
  ) {
    if (vocabulary[0] !== PAD || vocabulary[1] !== UNK) throw new Error('vocabulary must start with <pad>, <unk>')
    this.index = new Map(vocabulary.map((w, i) => [w, i]))
  }

  /** Builds the vocabulary from training transcripts only (words sorted for a stable id order). */
  static fit(texts: string[], maxLength = 6): Tokenizer {
    const seen = new Set<string>()
    for (const t of texts) for (const w of words(t)) seen.add(w)
    return new Tokenizer([PAD, UNK, ...[...seen].sort()], maxLength)
  }

  /** Ids padded with 0 (or cut) to `maxLength`. */
  encode(text: string): number[] {
    const ids = words(text)
      .slice(0, this.maxLength)
      .map((w) => this.index.get(w) ?? 1)
    while (ids.length < this.maxLength) ids.push(0)
    return ids
  }

  encodeAll(texts: string[]): Int32Array {
    const out = new Int32Array(texts.length * this.maxLength)
    for (const [i, t] of texts.entries()) out.set(this.encode(t), i * this.maxLength)
    return out
  }

  toJSON() {
    return { vocabulary: this.vocabulary, maxLength: this.maxLength }
  }
}

/** RAVDESS statement of a file name (`…-SS-…`, field 5): the words every clip of that statement says. */
export const RAVDESS_STATEMENTS: Record<number, string> = {
  1: 'Kids are talking by the door',
  2: 'Dogs are sitting by the door',
}
