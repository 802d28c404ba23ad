/**
 * A line on a task that says what flex-bridge is doing with its reservation, such as
 * "accepting…". Flex renders it inside TaskListItem and TaskCanvasHeader and passes the task.
 */
import * as React from 'react';
import type { ITask } from '@twilio/flex-ui';
import type { BridgeStore } from './store';

export interface BridgeStatusProps {
  readonly store: BridgeStore;
  /** Set by Flex: the task of the list item or canvas. Its `sid` is the ReservationSid. */
  readonly task?: ITask;
}

const STYLE: React.CSSProperties = {
  display: 'block',
  fontSize: '12px',
  fontStyle: 'italic',
  lineHeight: '16px',
};

function read(store: BridgeStore, reservationSid: string | undefined): string | undefined {
  const state = store.current;
  if (state.status !== 'ready' || reservationSid === undefined) return undefined;
  return state.handle.indication(reservationSid);
}

/** The indication for one reservation, kept up to date. */
function useIndication(store: BridgeStore, reservationSid: string | undefined): string | undefined {
  const [text, setText] = React.useState(() => read(store, reservationSid));
  React.useEffect(() => {
    const refresh = (): void => setText(read(store, reservationSid));
    let stopHandle: (() => void) | undefined;
    const follow = (): void => {
      stopHandle?.();
      stopHandle = undefined;
      const state = store.current;
      if (state.status === 'ready') {
        stopHandle = state.handle.subscribe((changed) => {
          if (changed === reservationSid) refresh();
        });
      }
      refresh();
    };
    const stopStore = store.subscribe(follow);
    follow();
    return () => {
      stopStore();
      stopHandle?.();
    };
  }, [store, reservationSid]);
  return text;
}

export function BridgeStatus({ store, task }: BridgeStatusProps): JSX.Element | null {
  const text = useIndication(store, task?.sid);
  if (text === undefined) return null;
  return (
    <span className="flex-bridge-status" aria-live="polite" style={STYLE}>
      {text}
    </span>
  );
}
