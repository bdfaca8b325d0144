// Compile SwarmLedger with the pinned solc-js (WebAssembly, no downloads) through the standard-JSON API.
// Writes build/SwarmLedger.json and the identical package-data copy swarmd/ledger/artifacts/SwarmLedger.json.
// Usage: node build.js [--check]   (--check: exit 1 when the committed artifacts are stale, write nothing)
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const HERE = __dirname;
const SOURCES = ["ISwarmLedger.sol", "SwarmLedger.sol"]; // sorted: the source hash depends on this order
const OUTPUTS = [
  path.join(HERE, "build", "SwarmLedger.json"),
  path.join(HERE, "..", "swarmd", "ledger", "artifacts", "SwarmLedger.json"),
];
const SETTINGS = {
  // paris: no PUSH0, so the bytecode also runs on permissioned chains that lag behind mainnet forks.
  evmVersion: "paris",
  optimizer: { enabled: true, runs: 20000 },
  viaIR: true,
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

// sha256 over "name\0content\0" for each source in order; swarmd/ledger/artifact.py computes the same.
function sourceHash() {
  const h = crypto.createHash("sha256");
  for (const name of SOURCES) {
    h.update(name + "\0");
    h.update(fs.readFileSync(path.join(HERE, name)));
    h.update("\0");
  }
  return h.digest("hex");
}

function compile() {
  const sources = {};
  for (const name of SOURCES) sources[name] = { content: fs.readFileSync(path.join(HERE, name), "utf8") };
  const out = JSON.parse(solc.compile(JSON.stringify({ language: "Solidity", sources, settings: SETTINGS })));
  const errors = (out.errors || []).filter((e) => e.severity === "error");
  for (const e of out.errors || []) process.stderr.write(e.formattedMessage + "\n");
  if (errors.length) process.exit(1);
  const c = out.contracts["SwarmLedger.sol"].SwarmLedger;
  return {
    contractName: "SwarmLedger",
    compiler: { name: "solc-js", version: solc.version(), settings: { evmVersion: SETTINGS.evmVersion, optimizer: SETTINGS.optimizer, viaIR: SETTINGS.viaIR } },
    sourceHash: sourceHash(),
    sources: SOURCES,
    abi: c.abi,
    bytecode: "0x" + c.evm.bytecode.object,
    deployedBytecode: "0x" + c.evm.deployedBytecode.object,
  };
}

const text = JSON.stringify(compile(), null, 2) + "\n";
if (process.argv.includes("--check")) {
  const stale = OUTPUTS.filter((p) => !fs.existsSync(p) || fs.readFileSync(p, "utf8") !== text);
  for (const p of stale) process.stderr.write(`stale: ${path.relative(process.cwd(), p)}\n`);
  process.exit(stale.length ? 1 : 0);
}
for (const p of OUTPUTS) {
  fs.mkdirSync(path.dirname(p), { recursive: true });
  const tmp = p + ".tmp";
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, p);
  process.stdout.write(`wrote ${path.relative(process.cwd(), p)}\n`);
}
