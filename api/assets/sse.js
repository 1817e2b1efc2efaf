// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, so the
// dashboard reads the stream itself. Reconnects with exponential backoff (and jitter) until
// `signal` aborts, and treats a silent connection as dead (the server sends a keep-alive
// comment every 15 s).

/**
 * Follows the event stream at `url`.
 * - `headers()`: request headers, asked again at each connection.
 * - `onOpen()`: connected (again); `onEvent(type, data)`: one event.
 * - `onError(error, retryInMs)`: the connection failed or dropped; return false to stop trying.
 * - `toError(response)`: turns a non-2xx response into the error passed to onError.
 */
export async function follow(url, {
  signal, headers, onOpen, onEvent, onError, toError,
  idleMs = 45000, minDelayMs = 1000, maxDelayMs = 30000,
}) {
  let delay = minDelayMs;
  while (!signal.aborted) {
    try {
      await readOnce(url, { signal, headers, toError, idleMs, onEvent, onOpen: () => {
        delay = minDelayMs;
        onOpen();
      } });
      throw new Error('the server closed the event stream');
    } catch (e) {
      if (signal.aborted) return;
      const wait = Math.round(delay * (0.8 + Math.random() * 0.4));
      if (onError(e, wait) === false) return;
      await sleep(wait, signal);
      delay = Math.min(delay * 2, maxDelayMs);
    }
  }
}

/** One connection: resolves when the server ends the stream, rejects when it fails. */
async function readOnce(url, { signal, headers, toError, idleMs, onEvent, onOpen }) {
  const ctrl = new AbortController();
  const stop = () => ctrl.abort(signal.reason);
  signal.addEventListener('abort', stop, { once: true });
  let idle = 0;
  const arm = () => {
    clearTimeout(idle);
    idle = setTimeout(() => ctrl.abort(new Error(`no data from the server for ${idleMs / 1000} s`)), idleMs);
  };
  try {
    arm();
    const res = await fetch(url, {
      headers: { ...headers(), Accept: 'text/event-stream' },
      cache: 'no-store',
      signal: ctrl.signal,
    });
    if (!res.ok) throw await toError(res);
    onOpen();
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      arm();
      buf = takeEvents(buf + value, onEvent);
    }
  } finally {
    clearTimeout(idle);
    signal.removeEventListener('abort', stop);
    ctrl.abort();
  }
}

/**
 * Calls `emit(type, data)` for every complete event in `buf` (an event ends with a blank line) and
 * returns the incomplete rest. Comments (keep-alives) and `id:`/`retry:` fields are ignored.
 */
export function takeEvents(buf, emit) {
  // Normalise line ends, keeping a trailing CR that may be half of a CRLF split across chunks.
  const cr = buf.endsWith('\r') ? '\r' : '';
  let text = (cr ? buf.slice(0, -1) : buf).replace(/\r\n?/g, '\n');
  let end;
  while ((end = text.indexOf('\n\n')) >= 0) {
    const block = text.slice(0, end);
    text = text.slice(end + 2);
    let type = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line === '' || line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length) emit(type || 'message', data.join('\n'));
  }
  return text + cr;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}
