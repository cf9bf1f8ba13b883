/* Studies list and Workers pages. */
'use strict';

(function listPages() {
  const { h, fmt } = HPO;
  const PAGE = 50;

  /* Pause / resume / cancel buttons for a study; `done` reloads whatever shows it. */
  HPO.studyActions = function studyActions(study, done, onError) {
    const act = async (action) => {
      if (action === 'cancel' && !window.confirm(`Cancel study "${study.name}"? Running trials are told to stop.`)) return;
      try {
        await HPO.api(`/studies/${study.id}/${action}`, { method: 'POST' });
        done();
      } catch (error) {
        onError(error);
      }
    };
    const final = ['completed', 'failed', 'cancelled'].includes(study.status);
    return h('div', { class: 'actions' },
      study.status === 'paused'
        ? h('button', { type: 'button', onclick: () => act('resume'), 'data-action': 'resume' }, 'Resume')
        : h('button', { type: 'button', onclick: () => act('pause'), disabled: study.status !== 'running', 'data-action': 'pause' }, 'Pause'),
      h('button', { type: 'button', class: 'danger', onclick: () => act('cancel'), disabled: final, 'data-action': 'cancel' }, 'Cancel'));
  };

  HPO.objectiveText = (spec) => `${spec.objective.metric} ${spec.objective.direction === 'maximize' ? '↑ max' : '↓ min'}`;

  HPO.pages.studies = function studiesPage(main, route) {
    const state = { name: route.params.name || '', status: route.params.status || '', offset: Number(route.params.offset || 0) };
    const message = h('div', {});
    const body = h('div', { class: 'table-wrap' }, h('p', { class: 'muted' }, 'Loading…'));
    const pager = h('div', { class: 'pager' });
    const search = h('input', { type: 'search', placeholder: 'Search by name', value: state.name, 'aria-label': 'Search studies by name' });
    const status = h('select', { 'aria-label': 'Filter by status' }, h('option', { value: '' }, 'any status'),
      ['running', 'paused', 'completed', 'failed', 'cancelled'].map((s) => h('option', { value: s, selected: s === state.status }, s)));

    const load = async () => {
      const page = await HPO.api('/studies' + HPO.query({ name: state.name, status: state.status, limit: PAGE, offset: state.offset }));
      HPO.fill(message);
      if (!page.total) {
        HPO.fill(body, state.name || state.status
          ? HPO.empty('No study matches these filters.', 'Clear the search or pick another status.')
          : HPO.empty('No studies yet.', h('span', {}, 'Create one with ', h('code', {}, 'hpo study create -f spec.yaml'), '.')));
        HPO.fill(pager);
        return;
      }
      HPO.fill(body, h('table', { 'data-testid': 'studies-table' },
        h('thead', {}, h('tr', {}, ['Study', 'Status', 'Objective', 'Best', 'Trials by state', 'Budget spent', 'Started', 'Updated', '']
          .map((t) => h('th', {}, t)))),
        h('tbody', {}, page.items.map((s) => h('tr', { 'data-study': s.id },
          h('td', {}, h('a', { href: `#/study/${s.id}` }, s.name), h('div', { class: 'params' }, `${s.spec.scheduler.kind} · ${s.spec.sampler.kind}`)),
          h('td', {}, HPO.badge(s.status)),
          h('td', {}, HPO.objectiveText(s.spec)),
          h('td', { class: 'num' }, s.best ? h('a', { href: `#/trial/${s.best.trial_id}`, title: `at budget ${fmt.budget(s.best.budget)}` }, fmt.num(s.best.value)) : '—'),
          h('td', {}, HPO.stateBar(s.trial_counts)),
          h('td', { class: 'num' }, fmt.budget(s.budget_spent), s.spec.limits.total_budget ? h('div', { class: 'counts' }, `of ${fmt.budget(s.spec.limits.total_budget)}`) : null),
          h('td', { title: fmt.time(s.created_at) }, fmt.ago(s.created_at)),
          h('td', { title: fmt.time(s.updated_at) }, fmt.ago(s.updated_at)),
          h('td', {}, HPO.studyActions(s, load, (e) => HPO.fill(message, HPO.errorBox(e)))))))));
      const pages = Math.ceil(page.total / PAGE);
      const current = Math.floor(state.offset / PAGE) + 1;
      HPO.fill(pager, h('span', { class: 'muted' }, `${fmt.int(page.total)} studies · page ${current} of ${pages}`),
        h('button', { type: 'button', disabled: current <= 1, onclick: () => { state.offset -= PAGE; reload(); } }, 'Previous'),
        h('button', { type: 'button', disabled: current >= pages, onclick: () => { state.offset += PAGE; reload(); } }, 'Next'));
    };
    const reload = () => HPO.load(body, load);
    let typing = null;
    search.addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(() => { state.name = search.value.trim(); state.offset = 0; reload(); }, 250); });
    status.addEventListener('change', () => { state.status = status.value; state.offset = 0; reload(); });

    HPO.fill(main, h('div', { class: 'page-head' }, h('h1', {}, 'Studies')),
      HPO.card('All studies', h('div', { class: 'toolbar' }, search, status), message, body, pager));
    reload();
    const refresh = HPO.throttle(reload, 3000);
    HPO.onLeave(HPO.subscribe('/events', { changed: refresh }));
  };

  HPO.pages.workers = function workersPage(main) {
    const body = h('div', { class: 'table-wrap' }, h('p', { class: 'muted' }, 'Loading…'));
    let rows = [];
    let loadedAt = Date.now();
    const render = () => {
      if (!rows.length) {
        HPO.fill(body, HPO.empty('No worker has contacted this server yet.',
          h('span', {}, 'Start one with ', h('code', {}, `hpo worker --server ${location.origin}`), '.')));
        return;
      }
      const since = (Date.now() - loadedAt) / 1000;
      HPO.fill(body, h('table', { 'data-testid': 'workers-table' },
        h('thead', {}, h('tr', {}, ['Worker', 'Host', 'Status', 'Running', 'Heartbeat age', 'GPU slot', 'Resources', 'First seen']
          .map((t) => h('th', {}, t)))),
        h('tbody', {}, rows.map((w) => h('tr', { 'data-worker': w.worker_id },
          h('td', { class: 'mono' }, w.worker_id),
          h('td', {}, w.hostname || '—'),
          h('td', {}, HPO.badge(!w.live ? 'stale' : w.running ? 'running' : 'idle')),
          h('td', {}, w.running
            ? h('span', {}, h('a', { href: `#/trial/${w.running.id}` }, `trial #${w.running.number}`), ' of ',
              h('a', { href: `#/study/${w.study_id}` }, w.study_name),
              h('div', { class: 'params' }, `rung ${w.running.rung} · budget ${fmt.budget(w.running.budget_done)} → ${fmt.budget(w.running.budget_target)}`))
            : w.last_trial_id ? h('span', { class: 'muted' }, 'idle · last ', h('a', { href: `#/trial/${w.last_trial_id}` }, `trial ${w.last_trial_id}`)) : h('span', { class: 'muted' }, 'idle')),
          h('td', { class: 'num', 'data-age': true }, w.heartbeat_age_s === null ? '—' : fmt.age(w.heartbeat_age_s + since)),
          h('td', {}, w.gpu_slot ?? '—'),
          h('td', { class: 'params' }, Object.keys(w.resources).length ? Object.entries(w.resources).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ') : '—'),
          h('td', { title: fmt.time(w.first_seen) }, fmt.ago(w.first_seen)))))));
    };
    const load = async () => { rows = await HPO.api('/workers'); loadedAt = Date.now(); render(); };
    const reload = () => HPO.load(body, load);
    HPO.fill(main, h('div', { class: 'page-head' }, h('h1', {}, 'Workers')),
      HPO.card('Workers', h('span', { class: 'hint' }, 'live: seen in the last 2 minutes; ages tick in the browser'), body));
    reload();
    const ticker = setInterval(() => { if (rows.length) render(); }, 1000);
    HPO.onLeave(() => clearInterval(ticker));
    HPO.onLeave(HPO.subscribe('/events', { changed: HPO.throttle(reload, 3000) }));
  };
}());
