import { defineConfig } from 'vitest/config';

// Unit tests of the parts with no DOM: the magic line, the state reducer, the model over a fake
// kernel, the prompt-cell parser. The browser test (tests/test_lab_browser.py) covers the rest.
export default defineConfig({
  test: {
    include: ['src/__tests__/**/*.spec.ts'],
    environment: 'node'
  }
});
