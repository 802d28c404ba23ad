// Type-level checks, compiled by `npm run typecheck` and never run: the real twilio-sync
// clients of the versions Flex UI 2.x bundles (2.x), 3.x and the current 4.x fit the package.
import type { SyncClient as SyncClient2 } from 'twilio-sync-2';
import type { SyncClient as SyncClient3 } from 'twilio-sync-3';
import type { SyncClient as SyncClient4 } from 'twilio-sync';

import { watchWorkerChannel } from '../../src/index.js';
import type { SyncClientLike } from '../../src/index.js';

export async function fits(client2: SyncClient2, client3: SyncClient3, client4: SyncClient4): Promise<void> {
  const clients: SyncClientLike[] = [client2, client3, client4];
  for (const client of clients) {
    const watcher = await watchWorkerChannel(client, 'WK00000000000000000000000000000000', () => undefined);
    watcher.close();
  }
}
