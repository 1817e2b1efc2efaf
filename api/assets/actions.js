// The operator-defined actions of one agent (docs/actions.md), for the agent view: grouped by
// where they run (the host, or each container), one form per action built from its advertised
// parameter schema, and the last result shown under it. Pure DOM building: app.js owns the state
// and the requests, and passes `h` (its createElement helper) and the callbacks in.

const RANK = { viewer: 0, operator: 1, admin: 2 };

/** Whether a token of `role` may run `action` (the API checks again). */
export function mayRun(role, action) {
  return (RANK[role] ?? -1) >= (RANK[action.role] ?? 99);
}

/** The values of an action's form, by parameter name, as the API takes them. */
export function formValues(form, action) {
  const out = {};
  for (const p of action.params ?? []) {
    const el = form.elements.namedItem(p.name);
    if (!el) continue;
    // Integers go as their digits (the API takes them as text): no precision lost past 2^53.
    if (p.type === 'bool') out[p.name] = el.checked;
    else if (el.value !== '') out[p.name] = el.value;
  }
  return out;
}

/**
 * The section of an agent's actions. `st` holds what survives re-rendering: `values`
 * ("agent/action/param" → typed text), `outputs` ("agent/action" → {result} or {error}) and
 * `pending` (a Set of "agent/action").
 */
export function actionsPanel(h, { agent, actions, role, online, st, onRun }) {
  if (!actions) return [h('p', { class: 'muted' }, 'Loading actions…')];
  if (!actions.length) {
    return [h('p', { class: 'muted' }, 'No actions are defined on this agent (see docs/actions.md).')];
  }
  const groups = new Map();
  for (const a of actions) {
    const where = a.container ? `In container ${a.container}` : 'On the host';
    if (!groups.has(where)) groups.set(where, []);
    groups.get(where).push(a);
  }
  return [...groups].map(([where, list]) => h('div', { class: 'action-group' },
    h('h3', {}, where),
    list.map((a) => actionCard(h, { agent, a, role, online, st, onRun }))));
}

function actionCard(h, { agent, a, role, online, st, onRun }) {
  const key = `${agent}/${a.name}`;
  const pending = st.pending.has(key);
  const allowed = mayRun(role, a);
  const why = !allowed ? `needs the ${a.role} role` : !online ? 'the agent is offline' : null;
  const form = h('form', {
    class: 'action-form',
    'data-action-name': a.name,
    onsubmit: (ev) => {
      ev.preventDefault();
      onRun(agent, a, formValues(ev.target, a));
    },
  },
  (a.params ?? []).map((p) => field(h, key, p, st)),
  h('button', {
    type: 'submit',
    'data-key': `run:${key}`,
    disabled: pending || Boolean(why),
    title: why,
  }, pending ? `Running ${a.name}…` : `Run ${a.name}`),
  why ? h('span', { class: 'muted' }, ` (${why})`) : null);
  return h('section', { class: 'action', 'data-action': key },
    h('h4', {}, a.name, a.role === 'admin' ? h('span', { class: 'badge' }, 'admin') : null),
    a.description ? h('p', {}, a.description) : null,
    form,
    output(h, st.outputs.get(key)));
}

function field(h, key, p, st) {
  // Names are [a-z0-9_-]: '.' cannot occur in them, so the id is unique on the page.
  const id = `p.${key.replace('/', '.')}.${p.name}`;
  const vkey = `${key}/${p.name}`;
  const value = st.values.get(vkey) ?? p.default ?? '';
  const remember = (ev) => st.values.set(vkey, p.type === 'bool' ? String(ev.target.checked) : ev.target.value);
  let input;
  if (p.type === 'enum') {
    // Without a default nothing is chosen for the user: a required choice is made on purpose.
    const none = p.default == null ? [h('option', { value: '', selected: value === '' }, '— choose —')] : [];
    input = h('select', {
      id, name: p.name, onchange: remember, required: p.default == null, 'data-key': `in:${vkey}`,
    }, none, (p.choices ?? []).map((c) => h('option', { value: c, selected: c === value }, c)));
  } else if (p.type === 'bool') {
    input = h('input', {
      id, name: p.name, type: 'checkbox', checked: value === 'true', onchange: remember, 'data-key': `in:${vkey}`,
    });
  } else {
    input = h('input', {
      id,
      name: p.name,
      type: p.type === 'int' ? 'number' : 'text',
      min: p.min, max: p.max,
      required: p.default == null,
      title: p.pattern ? `must match ${p.pattern}` : null,
      value,
      oninput: remember,
      'data-key': `in:${vkey}`,
    });
  }
  const hint = p.description || (p.type === 'string' && p.pattern ? `matches ${p.pattern}` : null);
  return h('label', { for: id, class: 'param' }, p.name, input, hint ? h('small', { class: 'muted' }, hint) : null);
}

function output(h, out) {
  if (!out) return null;
  if (out.error) return h('div', { class: 'action-output error', role: 'status' }, out.error);
  const r = out.result;
  const head = r.timed_out
    ? `killed at its deadline after ${r.duration_ms} ms`
    : `exit ${r.exit_code} · ${r.duration_ms} ms`;
  return h('div', { class: `action-output ${r.exit_code === 0 ? 'ok' : 'error'}`, role: 'status' },
    h('p', { class: 'exit' }, head, r.truncated ? ' · output truncated' : ''),
    r.stdout ? h('pre', { class: 'stdout' }, r.stdout) : null,
    r.stderr ? h('pre', { class: 'stderr' }, r.stderr) : null);
}
