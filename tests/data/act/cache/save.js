// After the job: save `path` under `key` unless that entry exists (an exact hit is never re-saved).
"use strict";
const { entry, copy, fs } = require("./common.js");

const { dir, target } = entry();
if (fs.existsSync(dir)) {
  console.log(`Cache hit occurred on the primary key ${process.env.INPUT_KEY}, not saving cache.`);
} else if (!fs.existsSync(target)) {
  console.log(`Path does not exist: ${target}; nothing saved.`);
} else {
  const partial = `${dir}.partial-${process.pid}`;
  copy(target, partial);
  try {
    fs.renameSync(partial, dir); // whole or not at all: a job that dies mid-copy leaves no entry
    console.log(`Cache saved with key: ${process.env.INPUT_KEY}`);
  } catch (error) {
    // Another job saved the same key meanwhile; actions/cache says it could not reserve the key and goes on.
    if (!["EEXIST", "ENOTEMPTY"].includes(error.code)) throw error;
    fs.rmSync(partial, { recursive: true, force: true });
    console.log(`Unable to reserve cache with key ${process.env.INPUT_KEY}, another job may be creating this cache.`);
  }
}
