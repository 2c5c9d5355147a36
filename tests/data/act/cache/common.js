// What restore.js and save.js share: the inputs, and where an entry lives.
"use strict";
const fs = require("fs");
const path = require("path");
const { spawnSync } = require("child_process");

function input(name) {
  const value = (process.env[`INPUT_${name.toUpperCase()}`] || "").trim();
  if (!value) throw new Error(`the cache stand-in needs the input '${name}'`);
  return value;
}

function entry() {
  const root = process.env.CDKIT_ACT_CACHE;
  if (!root) throw new Error("the act suite names the cache directory in CDKIT_ACT_CACHE");
  const key = input("key");
  if (!/^[\w.+-]+$/.test(key)) throw new Error(`the cache stand-in takes keys of [A-Za-z0-9_.+-] only: ${key}`);
  return { dir: path.join(root, key), target: input("path") };
}

// `cp -a` (the runner's own tool, links kept as links), far faster than fs.cpSync on a virtualenv.
// `hardLinks` (a restore): `cp -al`, every file a hard link to the entry's, in a tenth of the time. Safe
// because nothing a job does writes a restored file in place: pip and Python replace files (a new file,
// renamed over the old) and never rewrite one, so the entry stays as it was saved.
function copy(from, to, hardLinks = false) {
  fs.rmSync(to, { recursive: true, force: true });
  fs.mkdirSync(path.dirname(to), { recursive: true });
  if (hardLinks && spawnSync("cp", ["-al", from, to], { stdio: "ignore" }).status === 0) return;
  fs.rmSync(to, { recursive: true, force: true }); // not linkable (another filesystem): copied instead
  const done = spawnSync("cp", ["-a", from, to], { stdio: "inherit" });
  if (done.status !== 0) throw new Error(`cp -a ${from} ${to} failed`);
}

module.exports = { entry, copy, fs };
