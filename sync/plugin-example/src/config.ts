/**
 * The plugin's settings, fixed at build time from the environment (or a `.env` file):
 *
 *   VITE_FLEX_BRIDGE_URL               where flex-bridge serves /flex (required)
 *   VITE_FLEX_BRIDGE_WHEN_UNREACHABLE  `flex` (default) or `refuse`
 *
 * Vite replaces `import.meta.env.VITE_*` with the values when it builds the bundle, so a
 * change needs a new build. Nothing secret belongs here: the bundle is public.
 */

export type WhenBridgeUnreachable = 'flex' | 'refuse';

export interface PluginConfig {
  /** The bridge's base URL, without a trailing slash. */
  readonly bridgeUrl: string;
  /**
   * What the accept guard does when the bridge cannot be reached and the channel still says
   * the agent may accept: `flex` lets Flex's own accept run (fail open), `refuse` stops it and
   * tells the agent (fail closed).
   */
  readonly whenBridgeUnreachable: WhenBridgeUnreachable;
}

export type ConfigResult =
  | { readonly ok: true; readonly config: PluginConfig }
  | { readonly ok: false; readonly problem: string };

interface Env {
  readonly VITE_FLEX_BRIDGE_URL?: string | undefined;
  readonly VITE_FLEX_BRIDGE_WHEN_UNREACHABLE?: string | undefined;
}

/** Check the settings. A problem is reported, never thrown: Flex must keep loading. */
export function readConfig(env: Env): ConfigResult {
  const rawUrl = (env.VITE_FLEX_BRIDGE_URL ?? '').trim();
  if (rawUrl === '') {
    return { ok: false, problem: 'VITE_FLEX_BRIDGE_URL was not set when the plugin was built' };
  }
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    return { ok: false, problem: `VITE_FLEX_BRIDGE_URL is not a URL: ${rawUrl}` };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    return { ok: false, problem: `VITE_FLEX_BRIDGE_URL must be http(s): ${rawUrl}` };
  }
  if (url.search !== '' || url.hash !== '') {
    return { ok: false, problem: `VITE_FLEX_BRIDGE_URL must not have a query or fragment: ${rawUrl}` };
  }

  const rawMode = (env.VITE_FLEX_BRIDGE_WHEN_UNREACHABLE ?? '').trim() || 'flex';
  if (rawMode !== 'flex' && rawMode !== 'refuse') {
    return {
      ok: false,
      problem: `VITE_FLEX_BRIDGE_WHEN_UNREACHABLE must be "flex" or "refuse", not "${rawMode}"`,
    };
  }

  return {
    ok: true,
    config: {
      bridgeUrl: url.href.replace(/\/+$/, ''),
      whenBridgeUnreachable: rawMode,
    },
  };
}

/** The settings this bundle was built with. */
export const buildConfig: ConfigResult = readConfig({
  VITE_FLEX_BRIDGE_URL: import.meta.env.VITE_FLEX_BRIDGE_URL,
  VITE_FLEX_BRIDGE_WHEN_UNREACHABLE: import.meta.env.VITE_FLEX_BRIDGE_WHEN_UNREACHABLE,
});
