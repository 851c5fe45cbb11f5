// The independent reference for nwc's tokenizer.json support: encodes files with the Hugging Face
// tokenizers in pure JavaScript (@huggingface/tokenizers, fetched by scripts/fetch-references.sh;
// nothing is downloaded here) and prints the ids as JSON, one line per input.
//
//   node hf_reference_encode.mjs <tokenizers.mjs> <tokenizer.json> [options] <text files...>
//     --config <tokenizer_config.json>  passed to the Tokenizer constructor (default {})
//     --special                         add the post-processor's special tokens
//     --docs                            ppl-v1 documents: CRLF -> LF, split at "\n\n", ASCII
//                                       whitespace trimmed, empty documents dropped; each
//                                       document encoded on its own, the ids concatenated
//     --time                            print {"file", "bytes", "seconds"} instead of the ids
//     --repeat <n>                      with --time: best of n runs
//     --probe <text>                    first print the ids of <text> with the special tokens
//
// Bytes reach the reference as JavaScript strings decoded by TextDecoder("utf-8") in replacement
// mode (the WHATWG rule: each maximal invalid subsequence becomes one U+FFFD) with ignoreBOM, so a
// leading byte-order mark stays a character. nwc's encoder applies the same rule to its input.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
if (args.length < 3) {
  console.error("usage: hf_reference_encode.mjs <tokenizers.mjs> <tokenizer.json> [options] <files...>");
  process.exit(2);
}
const [library, tokenizer_json] = args;
let config = {};
let special = false;
let docs = false;
let time = false;
let repeat = 1;
let probe = null;
const files = [];
for (let i = 2; i < args.length; ++i) {
  const a = args[i];
  if (a === "--config") config = JSON.parse(readFileSync(args[++i], "utf8"));
  else if (a === "--special") special = true;
  else if (a === "--docs") docs = true;
  else if (a === "--time") time = true;
  else if (a === "--repeat") repeat = Number(args[++i]);
  else if (a === "--probe") probe = args[++i];
  else files.push(a);
}

const { Tokenizer } = await import(pathToFileURL(library).href);
const tokenizer = new Tokenizer(JSON.parse(readFileSync(tokenizer_json, "utf8")), config);
const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

const is_space = (c) => c === " " || c === "\n" || c === "\t" || c === "\r" || c === "\v" || c === "\f";
function documents(text) {
  text = text.replaceAll("\r\n", "\n");
  const out = [];
  for (const part of text.split("\n\n")) {
    let a = 0;
    let b = part.length;
    while (a < b && is_space(part[a])) ++a;
    while (b > a && is_space(part[b - 1])) --b;
    if (b > a) out.push(part.slice(a, b));
  }
  return out;
}

function encode(text) {
  if (!docs) return tokenizer.encode(text, { add_special_tokens: special }).ids;
  const ids = [];
  for (const d of documents(text)) {
    for (const id of tokenizer.encode(d, { add_special_tokens: special }).ids) ids.push(id);
  }
  return ids;
}

if (probe !== null) console.log(JSON.stringify(tokenizer.encode(probe, { add_special_tokens: true }).ids));
for (const file of files) {
  const bytes = readFileSync(file);
  const text = decoder.decode(bytes);
  if (time) {
    let best = Infinity;
    let count = 0;
    for (let r = 0; r < repeat; ++r) {
      const t0 = process.hrtime.bigint();
      count = encode(text).length;
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      best = Math.min(best, s);
    }
    console.log(JSON.stringify({ file, bytes: bytes.length, tokens: count, seconds: best }));
  } else {
    console.log(JSON.stringify(encode(text)));
  }
}
