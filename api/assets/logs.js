// A container's log view (#/logs/AGENT/CONTAINER): the last lines, then new ones as they come
// (GET …/logs?follow=true, Server-Sent Events read by fetch(), see sse.js), with follow on and
// off. The view keeps at most MAX_LINES lines: older ones are dropped as new ones arrive, so a
// container that writes megabytes cannot fill the tab's memory. Stopping the follow (or leaving
// the view) aborts the request, which ends the stream on the agent.

import { takeEvents } from './sse.js';

/** Lines the view keeps. */
export const MAX_LINES = 1000;
/** Lines asked for when a follow starts. */
const TAIL = 200;

export class LogView {
  /**
   * - `h`: the dashboard's element builder; `headers()`: request headers (the token);
   * - `toError(response)`: a failed response as an Error with the server's message.
   */
  constructor(h, { agent, container, headers, toError }) {
    this.agent = agent;
    this.container = container;
    this.headers = headers;
    this.toError = toError;
    this.ctrl = null;
    this.status = h('span', { class: 'log-status', role: 'status' }, '');
    this.count = h('span', { class: 'muted log-count' }, '');
    this.toggle = h('input', {
      type: 'checkbox', id: 'log-follow', checked: true,
      onchange: () => (this.toggle.checked ? this.start() : this.stop('Paused')),
    });
    this.lines = h('pre', {
      class: 'log', tabindex: '0', 'aria-label': `Logs of ${container}`, 'aria-live': 'off',
    });
    this.el = h('section', { class: 'log-view', 'data-container': `${agent}/${container}` },
      h('div', { class: 'log-controls' },
        h('label', { for: 'log-follow' }, this.toggle, ' Follow'),
        this.status, this.count),
      this.lines);
  }

  /** Starts following (again), replacing what is shown with the last lines. */
  start() {
    this.stop();
    this.lines.replaceChildren();
    this.toggle.checked = true;
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    this.say('Connecting…');
    this.read(ctrl).catch((e) => {
      if (ctrl.signal.aborted) return;
      this.toggle.checked = false;
      this.say(`Stopped: ${e.message}`, true);
    });
  }

  /** Stops following; what is shown stays. */
  stop(why) {
    this.ctrl?.abort();
    this.ctrl = null;
    if (why) this.say(why);
  }

  async read(ctrl) {
    const path = `/api/v1/agents/${encodeURIComponent(this.agent)}/containers/`
      + `${encodeURIComponent(this.container)}/logs?follow=true&tail=${TAIL}`;
    const res = await fetch(path, {
      headers: { ...this.headers(), Accept: 'text/event-stream' },
      cache: 'no-store',
      signal: ctrl.signal,
    });
    if (!res.ok) throw await this.toError(res);
    this.say('Following');
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error('the server closed the stream');
      buf = takeEvents(buf + value, (type, data) => this.onEvent(type, data));
      if (!this.ctrl) return;
    }
  }

  onEvent(type, data) {
    const body = JSON.parse(data);
    if (type === 'lines') return this.add(body.lines);
    if (type !== 'end') return undefined;
    this.stop();
    this.toggle.checked = false;
    const why = body.error ? body.error.message
      : { eof: 'the container stopped', cancelled: 'cancelled', expired: 'the stream expired' }[body.reason];
    return this.say(`Ended: ${why ?? body.reason}`, Boolean(body.error));
  }

  /** Appends lines (stderr marked), dropping the oldest beyond MAX_LINES; keeps the view at the
   *  bottom when it was there. */
  add(lines) {
    const pre = this.lines;
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 20;
    const frag = document.createDocumentFragment();
    for (const l of lines) {
      const span = document.createElement('span');
      span.className = l.stream === 'stderr' ? 'line stderr' : 'line';
      span.textContent = `${l.text}\n`;
      frag.append(span);
    }
    pre.append(frag);
    while (pre.childElementCount > MAX_LINES) pre.firstElementChild.remove();
    this.count.textContent = `${pre.childElementCount} lines (at most ${MAX_LINES})`;
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  say(text, error = false) {
    this.status.textContent = text;
    this.status.classList.toggle('error', error);
  }
}
