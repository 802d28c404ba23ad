/**
 * `vite build`: one IIFE bundle, dist/plugin-flex-bridge-example.js, that Flex loads with a
 * <script> tag. React, ReactDOM and Flex itself are not in it: Flex UI 2.x provides them on
 * the page as `window.React`, `window.ReactDOM` and `window.Twilio.Flex`, as it does for
 * plugins built with the Twilio CLI. The plugin reaches Flex through the `flex` object given
 * to `init`; it imports only types from '@twilio/flex-ui'.
 *
 * `vite` (the dev server) serves dev/index.html, the local harness; see README.md.
 */
import { defineConfig, loadEnv } from 'vite';

const PROVIDED_BY_FLEX: Record<string, string> = {
  react: 'React',
  'react-dom': 'ReactDOM',
  '@twilio/flex-ui': 'Twilio.Flex',
};

export default defineConfig(({ command, mode }) => {
  const env = loadEnv(mode, process.cwd(), 'VITE_');
  if (command === 'build' && !env['VITE_FLEX_BRIDGE_URL']) {
    console.warn(
      'warning: VITE_FLEX_BRIDGE_URL is not set; the plugin will load but stay off (see README.md)',
    );
  }
  return {
    // Classic JSX (React.createElement): React 17 as a page global has no jsx-runtime.
    esbuild: { jsx: 'transform', jsxFactory: 'React.createElement', jsxFragment: 'React.Fragment' },
    build: {
      outDir: 'dist',
      emptyOutDir: true,
      sourcemap: true,
      target: 'es2020',
      lib: {
        entry: 'src/index.ts',
        formats: ['iife'],
        name: 'FlexBridgeExamplePlugin',
        fileName: () => 'plugin-flex-bridge-example.js',
      },
      rollupOptions: {
        external: Object.keys(PROVIDED_BY_FLEX),
        output: { globals: PROVIDED_BY_FLEX },
      },
    },
    // The local harness. Its origin, http://localhost:5173, is what the bridge's
    // FLEX_BRIDGE_CORS_ORIGINS must list. The emulator's admin API (tokens, live feed) has no
    // CORS, so the dev server forwards /_emulator to it.
    server: {
      host: 'localhost',
      port: 5173,
      strictPort: true,
      proxy: {
        '/_emulator': { target: env['VITE_FLEX_BRIDGE_EMULATOR_URL'] || 'http://127.0.0.1:8700', ws: true },
      },
    },
  };
});
