/// <reference types="vite/client" />

// The build-time settings of this plugin (see src/config.ts and README.md). Vite replaces
// `import.meta.env.VITE_*` with the values from the environment or a `.env` file at build time.
interface ImportMetaEnv {
  /** Where flex-bridge serves `/flex`, e.g. `https://bridge.example.com`. Required. */
  readonly VITE_FLEX_BRIDGE_URL?: string;
  /** `flex` (default: fail open, Flex's own accept runs) or `refuse` (fail closed). */
  readonly VITE_FLEX_BRIDGE_WHEN_UNREACHABLE?: string;
  /** The local harness only (dev/): the emulator's base URL, default `http://127.0.0.1:8700`. */
  readonly VITE_FLEX_BRIDGE_EMULATOR_URL?: string;
}

interface ImportMeta {
  readonly env: ImportMetaEnv;
}
