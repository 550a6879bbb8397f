/**
 * Detaching a mount from the runtime's own mount namespace (start-up cleanup
 * of what a dead runtime left). Node has no umount, so libc's is called
 * through koffi, loaded only when there is something to detach.
 */

const MNT_DETACH = 2;

let umountFn: ((target: string, flags: number) => number) | undefined;

async function load(): Promise<(target: string, flags: number) => number> {
  if (!umountFn) {
    const koffi = (await import('koffi')).default;
    umountFn = koffi.load('libc.so.6').func('int umount2(const char *, int)') as (
      t: string,
      f: number,
    ) => number;
  }
  return umountFn;
}

/** Lazily detaches the mount at `target`; false when that failed. */
export async function detachMount(target: string): Promise<boolean> {
  return (await load())(target, MNT_DETACH) === 0;
}
