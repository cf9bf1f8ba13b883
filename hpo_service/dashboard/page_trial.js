/* Trial page: parameters, curve with rungs, attempts and leases, metrics, checkpoint. */
'use strict';

(function trialPage() {
  const { h, fmt } = HPO;

  const kv = (pairs) => h('dl', { class: 'kv' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));

  function overviewCard(o) {
    const t = o.trial;
    const w = o.worker;
    return HPO.card('Overview', null, kv([
      ['Study', h('a', { href: `#/study/${o.study_id}` }, o.study_name)],
      ['State', HPO.badge(t.state)],
      ['Bracket / rung', `${t.bracket} / ${t.rung}`],
      ['Budget', `${fmt.budget(t.budget_done)} done of ${fmt.budget(t.budget_target)}`],
      [`Value (${o.metric}, latest rung)`, h('span', { 'data-testid': 'trial-value' }, fmt.num(t.value))],
      ['Attempt', String(t.attempt)],
      ['Seed', String(o.seed)],
      ['Leased by', t.lease_owner ? h('span', {}, h('a', { href: '#/workers', class: 'mono' }, t.lease_owner),
        w ? h('span', { class: 'muted' }, ` · ${w.hostname || ''}${w.gpu_slot ? ' · GPU ' + w.gpu_slot : ''} · seen ${fmt.ago(w.last_seen)}`) : null) : '—'],
      ['Updated', `${fmt.ago(t.updated_at)} (${fmt.time(t.updated_at)})`],
      ['Checkpoint', o.checkpoint_uri ? h('code', { 'data-testid': 'checkpoint' }, o.checkpoint_uri) : '—'],
      // The API exports the adapter of a study's best trial (adapter-producing trainers only).
      o.adapter_download_url ? ['Adapter', h('a', { href: o.adapter_download_url, download: '' }, 'Download adapter')] : null,
    ]));
  }

  const paramsCard = (params) => HPO.card('Parameters', null, h('table', { 'data-testid': 'params-table' },
    h('tbody', {}, Object.entries(params).map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', { class: 'num' }, fmt.param(v)))))));

  const rungsCard = (o) => HPO.card('Rungs and decisions', null, o.rungs.length
    ? h('table', { 'data-testid': 'rungs-table' }, h('thead', {}, h('tr', {}, ['Rung', 'Budget', o.metric, 'Outcome', 'Why'].map((c) => h('th', {}, c)))),
      h('tbody', {}, o.rungs.map((r) => h('tr', {}, h('td', { class: 'num' }, r.rung), h('td', { class: 'num' }, fmt.budget(r.budget)),
        h('td', { class: 'num' }, fmt.num(r.value)), h('td', {}, r.outcome), h('td', { class: 'reason' }, r.reason || '—')))))
    : HPO.empty('No rung finished yet.'));

  const attemptsCard = (o) => HPO.card('Attempts and leases', h('span', { class: 'hint' }, 'what ended each attempt comes from the decision log'),
    h('table', { 'data-testid': 'attempts-table' }, h('thead', {}, h('tr', {}, ['Attempt', 'Reports', 'Steps', 'First report', 'Last report', 'Ended by'].map((c) => h('th', {}, c)))),
      h('tbody', {}, o.attempts.map((a) => h('tr', {}, h('td', { class: 'num' }, a.attempt), h('td', { class: 'num' }, fmt.int(a.reports)),
        h('td', { class: 'num' }, a.reports ? `${fmt.budget(a.first_step)} – ${fmt.budget(a.last_step)}` : '—'),
        h('td', {}, fmt.time(a.first_report_at)), h('td', {}, fmt.time(a.last_report_at)),
        h('td', {}, a.ended_by ? [h('b', {}, a.ended_by.kind), h('div', { class: 'reason' }, a.ended_by.reason)]
          : a.attempt === o.trial.attempt ? h('span', { class: 'muted' }, o.trial.state === 'running' ? `running on ${o.trial.lease_owner}` : 'current') : '—'))))));

  const decisionsCard = (o) => HPO.card('Decision log', null, o.decisions.length
    ? h('ul', { class: 'feed' }, o.decisions.map((d) => h('li', {}, h('span', { class: 'when' }, fmt.time(d.created_at)),
      h('span', { class: 'kind' }, d.kind), d.attempt ? h('span', { class: 'muted' }, `attempt ${d.attempt} · `) : null, h('span', { class: 'reason' }, d.reason))))
    : HPO.empty('No decision about this trial yet.'));

  function metricsCard(o) {
    const last = o.curve.length ? o.curve[o.curve.length - 1] : null;
    return HPO.card('Metrics', h('span', { class: 'hint' }, last ? `last report, step ${fmt.budget(last[0])}` : ''),
      last ? h('table', { 'data-testid': 'metrics-table' }, h('tbody', {}, Object.entries(last[2]).map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', { class: 'num' }, fmt.num(v))))))
        : HPO.empty('No report yet.'));
  }

  HPO.pages.trial = function page(main, route) {
    const id = route.id;
    const ui = { metric: null };
    const top = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
    let chart = null;
    let overview = null;

    const render = (o) => {
      overview = o;
      document.title = `trial #${o.trial.number} · ${o.study_name} · hpo-service`;
      const metrics = [...new Set(o.curve.flatMap((p) => Object.keys(p[2])))];
      ui.metric = ui.metric && metrics.includes(ui.metric) ? ui.metric : o.metric;
      const chartEl = h('div', { class: 'chart', 'data-testid': 'trial-chart' });
      const select = metrics.length > 1 ? h('select', { 'aria-label': 'Metric', onchange: (e) => { ui.metric = e.target.value; draw(); } },
        metrics.map((m) => h('option', { value: m, selected: m === ui.metric }, m))) : null;
      const note = h('span', { class: 'hint', 'data-testid': 'curve-note' }, `${fmt.int(o.curve.length)} of ${fmt.int(o.reports_total)} reports shown`);
      HPO.fill(top,
        h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Studies'), ' / ', h('a', { href: `#/study/${o.study_id}` }, o.study_name), ` / trial #${o.trial.number}`),
        h('div', { class: 'page-head' }, h('h1', {}, `Trial #${o.trial.number}`), HPO.badge(o.trial.state), h('span', { class: 'muted' }, `id ${o.trial.id}`)),
        h('div', { class: 'grid2' }, overviewCard(o), h('div', {}, paramsCard(o.trial.params), metricsCard(o))),
        HPO.card('Learning curve', h('span', { class: 'toolbar' }, note, select), o.curve.length ? chartEl : HPO.empty('No report yet.', 'The curve appears with the first report.')),
        rungsCard(o), attemptsCard(o), decisionsCard(o));
      const draw = () => {
        if (chart) chart.release();
        chart = o.curve.length ? HPO.trialChart(chartEl, o, ui.metric) : null;
      };
      draw();
    };
    const load = async () => { const o = await HPO.api(`/trials/${id}/overview?max_points=2000`); await HPO.chartsReady; render(o); };
    HPO.fill(main, top);
    const reload = () => HPO.load(top, load);
    reload().then(() => {
      if (!overview) return;
      const refresh = HPO.throttle(reload, 2000);
      const seen = new Set();
      HPO.onLeave(HPO.subscribe(`/studies/${overview.study_id}/events`, {
        reports: (reports) => {
          const mine = reports.filter((r) => r.trial_id === id && !seen.has(r.id));
          mine.forEach((r) => seen.add(r.id));
          if (!mine.length) return;
          if (!chart) { refresh(); return; }
          const added = HPO.appendToTrialChart(chart, mine, ui.metric);
          overview.reports_total += mine.length;
          overview.shown = (overview.shown || overview.curve.length) + added;
          const note = document.querySelector('[data-testid="curve-note"]');
          if (note) note.textContent = `${fmt.int(overview.shown)} of ${fmt.int(overview.reports_total)} reports shown (live)`;
        },
        decisions: (decisions) => { if (decisions.some((d) => d.trial_id === id)) refresh(); },
        resync: refresh,
      }));
    });
  };
}());
