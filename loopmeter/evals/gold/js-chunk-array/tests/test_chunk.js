'use strict';
const assert = require('assert');
const path = require('path');
const { chunk } = require(path.resolve('src/chunk.js'));

assert.deepStrictEqual(chunk([1, 2, 3, 4, 5], 2), [[1, 2], [3, 4], [5]]);
assert.deepStrictEqual(chunk([1, 2, 3, 4], 2), [[1, 2], [3, 4]]);
assert.deepStrictEqual(chunk([], 3), []);
assert.deepStrictEqual(chunk([1, 2], 5), [[1, 2]]);
const input = [1, 2, 3];
chunk(input, 1);
assert.deepStrictEqual(input, [1, 2, 3]);
for (const bad of [0, -1, 1.5, '2', NaN]) {
  assert.throws(() => chunk([1, 2, 3], bad), RangeError, `size ${bad}`);
}
console.log('ok');
