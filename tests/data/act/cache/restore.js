// The step: restore the entry named by `key` into `path`, and say whether it was there.
"use strict";
const { entry, copy, fs } = require("./common.js");

const { dir, target } = entry();
const hit = fs.existsSync(dir);
if (hit) copy(dir, target, true);
fs.appendFileSync(process.env.GITHUB_OUTPUT, `cache-hit=${hit}\n`);
console.log(hit ? `Cache restored from key: ${process.env.INPUT_KEY}` : `Cache not found for key: ${process.env.INPUT_KEY}`);
