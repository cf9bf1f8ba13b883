/* Study page: summary, history, learning curves, Hyperband view, parameters, trials, activity. */
'use strict';

(function studyPage() {
  const { h, fmt } = HPO;
  const TABLE_PAGE = 50;

  const seg = (options, current, onPick) => {
    const box = h('div', { class: 'seg', role: 'group' });
    const draw = (value) => HPO.fill(box, options.map(([v, label]) => h('button', {
      type: 'button', class: v === value ? 'on' : '', 'data-value': v, onclick: () => { draw(v); onPick(v); },
    }, label)));
    draw(current);
    return box;
  };

  function summary(study, reload, message) {
    const spec = study.spec;
    const limits = spec.limits;
    const stat = (label, value, extra) => h('div', { class: 'stat' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), extra);
    return [
      h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Studies'), ' / ', study.name),
      h('div', { class: 'page-head' }, h('h1', {}, study.name), HPO.badge(study.status), h('span', { class: 'spacer' }),
        HPO.studyActions(study, reload, (e) => HPO.fill(message, HPO.errorBox(e)))),
      message,
      HPO.card('Summary', h('span', { class: 'hint' }, `${spec.scheduler.kind} (budget ${fmt.budget(spec.scheduler.min_budget)}–${fmt.budget(spec.scheduler.max_budget)}, η=${spec.scheduler.eta}) · sampler ${spec.sampler.kind} · trainer ${spec.trainer.name}`),
        h('div', { class: 'stats' },
          stat('Objective', HPO.objectiveText(spec)),
          stat('Best value', study.best ? h('a', { href: `#/trial/${study.best.trial_id}`, 'data-testid': 'best-value' }, fmt.num(study.best.value)) : '—',
            study.best ? h('div', { class: 'counts' }, `trial ${study.best.trial_id} · budget ${fmt.budget(study.best.budget)}`) : null),
          stat('Trials', fmt.int(study.trials_created), HPO.stateBar(study.trial_counts)),
          stat('Budget spent', fmt.budget(study.budget_spent), limits.total_budget ? h('div', { class: 'counts' }, `of ${fmt.budget(limits.total_budget)}`) : null),
          stat('Started', fmt.ago(study.created_at), h('div', { class: 'counts' }, fmt.time(study.created_at))),
          stat('Updated', fmt.ago(study.updated_at), h('div', { class: 'counts' }, fmt.time(study.updated_at))))),
    ];
  }

  function hyperbandTable(view) {
    const cells = view.cells;
    if (!cells.length) return HPO.empty('No trial has started yet.', 'Brackets and rungs appear once workers lease trials.');
    const rungs = [...new Set(cells.map((c) => c.rung))].sort((a, b) => a - b);
    const brackets = [...new Set(cells.map((c) => c.bracket))].sort((a, b) => a - b);
    const at = new Map(cells.map((c) => [`${c.bracket}/${c.rung}`, c]));
    const cell = (c) => {
      if (!c) return h('td', { class: 'muted' }, '');
      const left = [c.promoted && `${c.promoted} promoted`, c.stopped && `${c.stopped} stopped`, c.completed && `${c.completed} completed`, c.failed && `${c.failed} failed`].filter(Boolean);
      const here = [c.in_flight && `${c.in_flight} in flight`, c.waiting && `${c.waiting} waiting`].filter(Boolean);
      return h('td', { 'data-cell': `${c.bracket}/${c.rung}` },
        h('div', {}, h('b', {}, fmt.int(c.entered)), ' entered', h('span', { class: 'muted' }, ` · budget ${fmt.budget(c.budget)}`)),
        left.length ? h('div', { class: 'counts' }, 'left: ' + left.join(', ')) : null,
        here.length ? h('div', { class: 'counts' }, here.join(', ')) : null,
        c.best_value !== null ? h('div', { class: 'counts' }, `best ${fmt.num(c.best_value)}`) : null);
    };
    const label = (b) => {
      const first = cells.find((c) => c.bracket === b);
      return view.grouped ? h('span', {}, `like ${b}`, h('div', { class: 'counts' }, `${fmt.int(first.brackets)} brackets`)) : `${b}`;
    };
    return h('div', { class: 'table-wrap' },
      view.grouped ? h('p', { class: 'hint' }, `${fmt.int(view.brackets)} brackets; each row sums the brackets of one shape (same first budget and rungs).`) : null,
      h('table', { 'data-testid': 'hyperband-table' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Bracket'), rungs.map((r) => h('th', {}, `Rung ${r}`)))),
        h('tbody', {}, brackets.map((b) => h('tr', {}, h('th', {}, label(b)), rungs.map((r) => cell(at.get(`${b}/${r}`))))))));
  }

  /* What only some studies have (the server sends null otherwise). */
  HPO.renderMupTransfer = function renderMupTransfer(t) {
    if (!t) return null;
    const rows = (items, columns) => h('table', {}, h('thead', {}, h('tr', {}, columns.map(([, label]) => h('th', {}, label)))),
      h('tbody', {}, items.map((item) => h('tr', {}, columns.map(([key]) => h('td', { class: 'num' },
        typeof item[key] === 'object' && item[key] !== null ? JSON.stringify(item[key]) : fmt.param(item[key])))))));
    const keys = (items) => [...new Set(items.flatMap((item) => Object.keys(item)))].map((k) => [k, k]);
    return HPO.card('muP transfer', h('span', { class: 'hint' }, `stage ${t.stage}: ${t.stage_name}`), h('div', { 'data-testid': 'transfer' },
      h('dl', { class: 'kv' },
        h('dt', {}, 'Transfer'), h('dd', {}, `${t.param} from the proxies to ${fmt.int(t.target)}`),
        h('dt', {}, 'Transferred configuration'), h('dd', {}, t.transferred ? JSON.stringify(t.transferred) : '—'),
        h('dt', {}, 'Gap (grid steps)'), h('dd', {}, t.gap_grid_steps === null ? '—' : String(t.gap_grid_steps)),
        h('dt', {}, 'Proxy compute'), h('dd', {}, fmt.num(t.proxy_compute)),
        h('dt', {}, 'Cost vs one target run'), h('dd', {}, fmt.num(t.cost_vs_one_target_run)),
        h('dt', {}, 'Cost vs tuning at target'), h('dd', {}, fmt.num(t.cost_vs_tuning_at_target))),
      t.proxies.length ? [h('h2', {}, 'Proxies'), rows(t.proxies, keys(t.proxies))] : null,
      t.check.length ? [h('h2', {}, 'Check sweep'), rows(t.check, keys(t.check))] : null));
  };
  HPO.renderBudgetHistory = (history) => (history ? HPO.card('Budget history', h('span', { class: 'hint' }, `max budget now ${fmt.budget(history.max_budget)}`),
    h('ul', { class: 'feed', 'data-testid': 'budget-history' }, history.raises.map((d) => h('li', {},
      h('span', { class: 'when' }, fmt.time(d.created_at)), h('span', { class: 'kind' }, 'extend'), h('span', { class: 'reason' }, d.reason))))) : null);

  HPO.pages.study = function page(main, route) {
    const id = route.id;
    const ui = { history: 'seq', colorBy: 'bracket', budget: null, feed: [] };
    const head = h('div', {});
    const message = h('div', {});
    const historyBody = h('div', {});
    const curvesBody = h('div', {});
    const curvesNote = h('span', { class: 'hint' });
    const hyperbandBody = h('div', {});
    const parallelBody = h('div', {});
    const parallelTools = h('span', {});
    const importanceBody = h('div', {});
    const tableCard = h('div', {});
    const feedList = h('ul', { class: 'feed', 'data-testid': 'activity' });
    const extensions = h('div', {});
    const charts = {};

    const loadSummary = async () => {
      const study = await HPO.api(`/studies/${id}`);
      document.title = `${study.name} · hpo-service`;
      HPO.state.study = study;
      HPO.fill(head, summary(study, () => HPO.load(head, loadSummary), message));
    };
    const loadHistory = async () => {
      const data = await HPO.api(`/studies/${id}/history?max_points=2000`); await HPO.chartsReady;
      if (!data.total) { HPO.fill(historyBody, HPO.empty('No results yet.', 'Points appear as trials finish their first rung.')); return; }
      const el = h('div', { class: 'chart', 'data-testid': 'history-chart' });
      HPO.fill(historyBody, el, h('div', { class: 'hint' }, data.stride === 1
        ? `All ${fmt.int(data.total)} results; lines: the best value so far at each budget level.`
        : `${fmt.int(data.points.length)} of ${fmt.int(data.total)} results shown (every ${fmt.int(data.stride)}th, and the newest); lines: every improvement of the best value at each budget level.`));
      if (charts.history) charts.history.release();
      charts.history = HPO.historyChart(el, data, ui.history);
    };
    const loadCurves = async () => {
      const data = await HPO.api(`/studies/${id}/curves?max_trials=100&top=10&max_points=100`); await HPO.chartsReady;
      if (!data.curves.length) { HPO.fill(curvesBody, HPO.empty('No trials yet.')); HPO.fill(curvesNote); return; }
      const el = h('div', { class: 'chart tall', 'data-testid': 'curves-chart' });
      HPO.fill(curvesBody, el);
      HPO.fill(curvesNote, data.curves.length >= data.total_trials ? `all ${fmt.int(data.total_trials)} trials; the 10 best drawn bold`
        : `${data.curves.length} of ${fmt.int(data.total_trials)} trials: the 10 best (bold) and every ${fmt.int(data.stride)}th by number`);
      if (charts.curves) charts.curves.release();
      charts.curves = HPO.curvesChart(el, data, ui.colorBy);
    };
    const loadHyperband = async () => HPO.fill(hyperbandBody, hyperbandTable(await HPO.api(`/studies/${id}/hyperband`)));
    const loadParallel = async () => {
      const data = await HPO.api(`/studies/${id}/parallel` + HPO.query({ budget: ui.budget, max_points: 500, top: 50 })); await HPO.chartsReady;
      HPO.fill(parallelTools, data.levels.length > 1 ? h('select', {
        'aria-label': 'Budget level', onchange: (e) => { ui.budget = Number(e.target.value); HPO.load(parallelBody, loadParallel); HPO.load(importanceBody, loadImportance); },
      }, data.levels.map(([b, n]) => h('option', { value: b, selected: b === data.budget }, `budget ${fmt.budget(b)} (${fmt.int(n)} results)`))) : null);
      if (!data.rows.length) { HPO.fill(parallelBody, HPO.empty('No results yet.')); return; }
      const el = h('div', { class: 'chart', 'data-testid': 'parallel-chart' });
      HPO.fill(parallelBody, el, h('div', { class: 'hint' }, data.rows.length >= data.observations
        ? `all ${fmt.int(data.observations)} results at budget ${fmt.budget(data.budget)}`
        : `${fmt.int(data.rows.length)} of ${fmt.int(data.observations)} results at budget ${fmt.budget(data.budget)}: the 50 best and a sample`));
      if (charts.parallel) charts.parallel.release();
      charts.parallel = HPO.parallelChart(el, data, data.metric, data.direction);
    };
    const loadImportance = async () => {
      const data = await HPO.api(`/studies/${id}/importance` + HPO.query({ budget: ui.budget })); await HPO.chartsReady;
      if (data.pending) {
        HPO.fill(importanceBody, HPO.empty('Computing…', 'the model is fitted in the background'));
        const retry = setTimeout(() => HPO.load(importanceBody, loadImportance), 1000);
        HPO.onLeave(() => clearTimeout(retry));
        return;
      }
      if (!Object.keys(data.importances).length) { HPO.fill(importanceBody, HPO.empty('Not enough data yet.', data.message || '')); return; }
      const el = h('div', { class: 'chart short', 'data-testid': 'importance-chart' });
      HPO.fill(importanceBody, el, h('div', { class: 'hint' }, `${data.evaluator} over ${fmt.int(data.used)} results at budget ${fmt.budget(data.budget)}`));
      if (charts.importance) charts.importance.release();
      charts.importance = HPO.importanceChart(el, data);
    };
    const loadExtensions = async () => {
      const data = await HPO.api(`/studies/${id}/extensions`);
      HPO.fill(extensions, HPO.renderMupTransfer(data.mup_transfer), HPO.renderBudgetHistory(data.budget_history));
    };

    const feed = (items) => {
      ui.feed = [...items, ...ui.feed].slice(0, 60);
      HPO.fill(feedList, ui.feed.length ? ui.feed : h('li', { class: 'muted' }, 'Waiting for reports and decisions…'));
    };
    const reportItem = (r) => h('li', { 'data-report': r.id }, h('span', { class: 'when' }, fmt.clock(r.created_at)),
      h('span', { class: 'kind' }, 'report'), h('a', { href: `#/trial/${r.trial_id}` }, `trial #${r.number}`),
      ` step ${fmt.budget(r.step)}: ${HPO.state.study ? HPO.state.study.spec.objective.metric : 'value'} ${fmt.num(r.value)}`);
    const decisionItem = (d) => h('li', { 'data-decision': d.id }, h('span', { class: 'when' }, fmt.clock(d.created_at)),
      h('span', { class: 'kind' }, d.kind), d.trial_id ? h('a', { href: `#/trial/${d.trial_id}` }, `trial ${d.trial_id}`) : 'study',
      h('div', { class: 'reason' }, d.reason));
    const seen = new Set();

    HPO.fill(main, head,
      HPO.card('Optimization history', seg([['seq', 'Trials'], ['budget', 'Budget spent']], ui.history, (v) => { ui.history = v; HPO.load(historyBody, loadHistory); }), historyBody),
      HPO.card('Learning curves', h('span', { class: 'toolbar' }, curvesNote, seg([['bracket', 'By bracket'], ['state', 'By state']], ui.colorBy, (v) => { ui.colorBy = v; HPO.load(curvesBody, loadCurves); })), curvesBody),
      HPO.card('Hyperband: brackets × rungs', h('span', { class: 'hint' }, 'entered each rung, and how they left it'), hyperbandBody),
      h('div', { class: 'grid2' }, HPO.card('Parallel coordinates', parallelTools, parallelBody), HPO.card('Parameter importance', null, importanceBody)),
      tableCard,
      HPO.card('Activity', h('span', { class: 'hint' }, 'reports and decisions as they arrive'), feedList),
      extensions);
    feed([]);

    HPO.state.study = null;
    const specReady = HPO.load(head, loadSummary).then(() => (HPO.state.study ? HPO.state.study.spec : null));
    const table = HPO.trialsTable(tableCard, id, specReady);
    // The live stream opens once the first data is in: it would hold one of the browser's six
    // connections to this server while the page's first requests queue for them.
    const loaded = Promise.allSettled([specReady, HPO.load(parallelBody, loadParallel), HPO.load(historyBody, loadHistory),
      HPO.load(curvesBody, loadCurves), HPO.load(hyperbandBody, loadHyperband), HPO.load(importanceBody, loadImportance),
      HPO.load(extensions, loadExtensions)]);

    const refreshFast = HPO.throttle(() => {
      HPO.load(head, loadSummary); HPO.load(historyBody, loadHistory); HPO.load(hyperbandBody, loadHyperband); table.reload();
    }, 3000);
    const refreshCurves = HPO.throttle(() => HPO.load(curvesBody, loadCurves), 5000);
    const refreshSlow = HPO.throttle(() => { HPO.load(parallelBody, loadParallel); HPO.load(importanceBody, loadImportance); }, 15000);
    let left = false;
    HPO.onLeave(() => { left = true; });
    loaded.then(() => { if (!left) HPO.onLeave(HPO.subscribe(`/studies/${id}/events`, {
      reports: (reports) => {
        const fresh = reports.filter((r) => !seen.has('r' + r.id));
        fresh.forEach((r) => seen.add('r' + r.id));
        if (!fresh.length) return;
        feed(fresh.slice(-20).reverse().map(reportItem));
        if (charts.curves) HPO.appendToCurves(charts.curves, fresh);
      },
      decisions: (decisions) => {
        const fresh = decisions.filter((d) => !seen.has('d' + d.id));
        fresh.forEach((d) => seen.add('d' + d.id));
        if (!fresh.length) return;
        feed(fresh.slice(-20).reverse().map(decisionItem));
        refreshCurves();
      },
      study: () => { refreshFast(); refreshSlow(); },
      resync: () => { refreshFast(); refreshCurves(); refreshSlow(); },
    })); });
  };
}());
