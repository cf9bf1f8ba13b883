/* The study page's trials table: server-side paging, sorting and filtering
 * (state, bracket, rung, parameter ranges / choices). */
'use strict';

(function trialsTable() {
  const { h, fmt } = HPO;
  const PAGE = 50;
  const COLUMNS = [['number', '#'], ['state', 'State'], ['bracket', 'Bracket'], ['rung', 'Rung'],
    ['budget_done', 'Budget'], ['value', 'Value'], ['attempt', 'Attempt']];

  HPO.trialsTable = function create(container, studyId, specReady) {
    const q = { state: '', bracket: '', rung: '', params: [], sort: 'number', offset: 0 };
    const message = h('div', {});
    const body = h('div', { class: 'table-wrap' }, h('p', { class: 'muted' }, 'Loading…'));
    const pager = h('div', { class: 'pager' });
    const chips = h('div', { class: 'chips' });
    const filters = h('div', { class: 'toolbar' });
    let space = {};

    const number = (label, key) => h('input', { type: 'number', min: 0, step: 1, placeholder: label, 'aria-label': label, 'data-filter': key,
      onchange: (e) => { q[key] = e.target.value; q.offset = 0; reload(); } });
    const paramFilter = () => {
      const names = Object.keys(space);
      const name = h('select', { 'aria-label': 'Parameter', 'data-filter': 'param-name' }, names.map((n) => h('option', { value: n }, n)));
      const inputs = h('span', { class: 'toolbar' });
      const drawInputs = () => {
        const dist = space[name.value];
        HPO.fill(inputs, dist && dist.type === 'categorical'
          ? h('select', { 'aria-label': 'Choice', 'data-filter': 'param-choice' }, dist.choices.map((c) => h('option', { value: String(c) }, String(c))))
          : [h('input', { type: 'number', step: 'any', placeholder: 'min', 'aria-label': 'Minimum', 'data-filter': 'param-low' }),
            h('input', { type: 'number', step: 'any', placeholder: 'max', 'aria-label': 'Maximum', 'data-filter': 'param-high' })]);
      };
      name.addEventListener('change', drawInputs);
      drawInputs();
      const add = () => {
        const dist = space[name.value];
        let text;
        if (dist.type === 'categorical') text = `${name.value}=${inputs.querySelector('select').value}`;
        else {
          const [low, high] = inputs.querySelectorAll('input');
          if (!low.value && !high.value) return;
          text = `${name.value}:${low.value}:${high.value}`;
        }
        q.params = [...q.params.filter((p) => !p.startsWith(name.value + ':') && !p.startsWith(name.value + '=')), text];
        q.offset = 0;
        reload();
      };
      return names.length ? [name, inputs, h('button', { type: 'button', onclick: add, 'data-filter': 'param-add' }, 'Add filter')] : [];
    };
    const stateSelect = h('select', { 'aria-label': 'State', 'data-filter': 'state', onchange: (e) => { q.state = e.target.value; q.offset = 0; reload(); } },
      h('option', { value: '' }, 'any state'), HPO.stateOrder.map((s) => h('option', { value: s }, s)));

    const header = (key, label) => {
      const active = q.sort.replace(/^-/, '') === key;
      return h('th', {
        class: 'sortable' + (active ? (q.sort.startsWith('-') ? ' sorted-desc' : ' sorted-asc') : ''), 'data-sort': key,
        onclick: () => { q.sort = active && !q.sort.startsWith('-') ? '-' + key : key; q.offset = 0; reload(); },
      }, label);
    };

    const load = async () => {
      const page = await HPO.api(`/studies/${studyId}/trial-table` + HPO.query({
        state: q.state, bracket: q.bracket, rung: q.rung, param: q.params, sort: q.sort, limit: PAGE, offset: q.offset,
      }));
      HPO.fill(message);
      HPO.fill(chips, q.params.map((p) => h('span', { class: 'chip', 'data-chip': p }, p,
        h('button', { type: 'button', 'aria-label': `Remove filter ${p}`, onclick: () => { q.params = q.params.filter((x) => x !== p); q.offset = 0; reload(); } }, '×'))));
      const names = Object.keys(space).length ? Object.keys(space) : [...new Set(page.items.flatMap((t) => Object.keys(t.params)))];
      if (!page.total) {
        HPO.fill(body, HPO.empty(q.state || q.bracket || q.rung || q.params.length ? 'No trial matches these filters.' : 'No trials yet.'));
      } else {
        HPO.fill(body, h('table', { 'data-testid': 'trials-table' },
          h('thead', {}, h('tr', {}, COLUMNS.map(([k, l]) => header(k, l)), names.map((n) => header('param:' + n, n)),
            h('th', {}, 'Worker'), header('updated_at', 'Updated'))),
          h('tbody', {}, page.items.map((t) => h('tr', { 'data-trial': t.id },
            h('td', { class: 'num' }, h('a', { href: `#/trial/${t.id}` }, `#${t.number}`)),
            h('td', {}, HPO.badge(t.state)), h('td', { class: 'num' }, t.bracket), h('td', { class: 'num' }, t.rung),
            h('td', { class: 'num' }, `${fmt.budget(t.budget_done)} / ${fmt.budget(t.budget_target)}`),
            h('td', { class: 'num' }, fmt.num(t.value)), h('td', { class: 'num' }, t.attempt),
            names.map((n) => h('td', { class: 'num' }, fmt.param(t.params[n]))),
            h('td', { class: 'mono' }, t.lease_owner ? h('a', { href: '#/workers' }, t.lease_owner) : '—'),
            h('td', { title: fmt.time(t.updated_at) }, fmt.ago(t.updated_at)))))));
      }
      const pages = Math.max(1, Math.ceil(page.total / PAGE));
      const current = Math.floor(q.offset / PAGE) + 1;
      HPO.fill(pager, h('span', { class: 'muted', 'data-testid': 'trials-count' },
        page.total ? `${fmt.int(q.offset + 1)}–${fmt.int(Math.min(q.offset + PAGE, page.total))} of ${fmt.int(page.total)} trials · page ${current} of ${fmt.int(pages)}` : '0 trials'),
        h('button', { type: 'button', disabled: current <= 1, 'data-page': 'previous', onclick: () => { q.offset -= PAGE; reload(); } }, 'Previous'),
        h('button', { type: 'button', disabled: current >= pages, 'data-page': 'next', onclick: () => { q.offset += PAGE; reload(); } }, 'Next'));
    };
    const reload = () => HPO.load(message, load);

    HPO.fill(container, HPO.card('Trials', h('span', { class: 'hint' }, 'sorted and filtered on the server; click a column to sort'),
      filters, chips, message, body, pager));
    reload();  // rows at once; the parameter filters wait for the study's search space
    specReady.then((spec) => {
      space = spec && typeof spec.search_space === 'object' ? spec.search_space : {};
      HPO.fill(filters, stateSelect, number('bracket', 'bracket'), number('rung', 'rung'), h('span', { class: 'muted' }, '·'), paramFilter());
    });
    return { reload };
  };
}());
