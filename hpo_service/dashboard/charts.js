/* Chart builders (Apache ECharts). Each takes a container and the API's (already
 * downsampled) payload and returns the chart; the page disposes charts when it leaves. */
'use strict';

(function charts() {
  const { fmt } = HPO;
  const PALETTE = ['#5470c6', '#91cc75', '#fac858', '#ee6666', '#73c0de', '#3ba272', '#fc8452', '#9a60b4', '#ea7ccc'];
  const OUTCOMES = {
    promoted: { symbol: 'triangle', color: '#23855a' },
    finished: { symbol: 'pin', color: '#2f6fde' },
    stopped: { symbol: 'diamond', color: '#c4372f' },
    failed: { symbol: 'rect', color: '#7a1f1a' },
    waiting: { symbol: 'circle', color: '#b26a00' },
  };

  /* A chart in `el`, resized with it; `release()` disposes it (and runs when the page is left). */
  HPO.chart = function chart(el) {
    const instance = echarts.init(el, HPO.theme() === 'dark' ? 'dark' : null, { renderer: 'canvas' });
    const observer = new ResizeObserver(() => { if (!instance.isDisposed()) instance.resize(); });
    observer.observe(el);
    instance.release = () => { observer.disconnect(); if (!instance.isDisposed()) instance.dispose(); };
    HPO.onLeave(instance.release);
    return instance;
  };

  const base = (extra) => ({
    backgroundColor: 'transparent', animation: false, color: PALETTE,
    grid: { left: 16, right: 24, top: 48, bottom: 56, containLabel: true },
    ...extra,
  });
  const dirWord = (direction) => (direction === 'maximize' ? 'higher is better' : 'lower is better');
  const goTrial = (id) => { if (id) location.hash = '#/trial/' + id; };

  /* Optimization history: each result's value per budget level, and each level's running best. */
  HPO.historyChart = function historyChart(el, data, xMode) {
    const chart = HPO.chart(el);
    const x = xMode === 'budget' ? 5 : 0;
    const newest = data.points.length ? data.points[data.points.length - 1][x] : null;
    const series = [];
    data.levels.forEach((level, i) => {
      const color = PALETTE[i % PALETTE.length];
      series.push({
        name: `budget ${fmt.budget(level)}`, type: 'scatter', symbolSize: 5, itemStyle: { color, opacity: 0.7 }, large: true, largeThreshold: 1000,
        data: data.points.filter((p) => p[3] === level).map((p) => [p[x], p[4], p[1], p[2], p[3]]),
      });
      const best = data.best.filter((p) => p[3] === level).map((p) => [p[x], p[4], p[1], p[2], p[3]]);
      const line = best.length && newest > best[best.length - 1][0] ? [...best, [newest, ...best[best.length - 1].slice(1)]] : best;
      series.push({
        name: `best @ ${fmt.budget(level)}`, type: 'line', step: 'end', showSymbol: false, lineStyle: { width: 2, color },
        itemStyle: { color }, data: line, improvements: best.length,
      });
    });
    chart.setOption(base({
      legend: { type: 'scroll', top: 4 },
      tooltip: {
        trigger: 'item',
        formatter: (p) => `trial #${p.data[3]} · budget ${fmt.budget(p.data[4])}<br>${escapeHtml(data.metric)} ${fmt.num(p.data[1])}`,
      },
      xAxis: { type: 'value', name: xMode === 'budget' ? 'budget spent' : 'results (completion order)',
        nameLocation: 'middle', nameGap: 28, scale: true },
      yAxis: { type: 'value', name: `${data.metric} (${dirWord(data.direction)})`, scale: true, nameTextStyle: { align: 'left' } },
      dataZoom: [{ type: 'inside' }, { type: 'slider', height: 16, bottom: 6 }],
      series,
    }));
    chart.on('click', (p) => goTrial(p.data && p.data[2]));
    return chart;
  };

  function groupOf(curve, colorBy) { return colorBy === 'state' ? curve.state : `bracket ${curve.bracket}`; }

  /* Learning curves, coloured by bracket or state, with rung markers and decisions. */
  HPO.curvesChart = function curvesChart(el, data, colorBy) {
    const chart = HPO.chart(el);
    const groups = [...new Set(data.curves.map((c) => groupOf(c, colorBy)))].sort();
    const colorOf = (group) => (colorBy === 'state' ? HPO.stateColor(group) : PALETTE[groups.indexOf(group) % PALETTE.length]);
    const series = data.curves.map((c) => ({
      id: 'trial-' + c.trial_id, name: groupOf(c, colorBy), type: 'line', showSymbol: c.points.length <= 2, symbolSize: 4,
      z: c.top ? 3 : 2,
      lineStyle: { width: c.top ? 2.2 : 1, opacity: c.top ? 0.95 : 0.4, color: colorOf(groupOf(c, colorBy)) },
      itemStyle: { color: colorOf(groupOf(c, colorBy)) }, emphasis: { focus: 'series' },
      trial: c, data: c.points.map((p) => [p[0], p[1]]),
    }));
    for (const [outcome, style] of Object.entries(OUTCOMES)) {
      const marks = data.curves.flatMap((c) => c.rungs.filter((r) => r.outcome === outcome)
        .map((r) => [r.budget, r.value, c.trial_id, c.number, r.rung, r.reason || '']));
      if (marks.length) {
        series.push({ id: 'marks-' + outcome, name: outcome, type: 'scatter', symbol: style.symbol, symbolSize: 9, z: 4,
          itemStyle: { color: style.color }, data: marks });
      }
    }
    chart.setOption(base({
      legend: { type: 'scroll', top: 4, data: [...groups, ...Object.keys(OUTCOMES)] },
      tooltip: {
        trigger: 'item', confine: true,
        formatter: (p) => {
          if (p.seriesType === 'scatter') {
            const [budget, value, , number, rung, reason] = p.data;
            return `trial #${number} · rung ${rung} (budget ${fmt.budget(budget)}): <b>${p.seriesName}</b><br>` +
              `${escapeHtml(data.metric)} ${fmt.num(value)}${reason ? '<br>' + escapeHtml(reason) : ''}`;
          }
          const c = series[p.seriesIndex].trial;
          return `trial #${c.number} · bracket ${c.bracket} · ${c.state}${c.top ? ' · top' : ''}<br>` +
            `step ${fmt.budget(p.data[0])}: ${escapeHtml(data.metric)} ${fmt.num(p.data[1])}`;
        },
      },
      xAxis: { type: 'value', name: 'budget (steps)', nameLocation: 'middle', nameGap: 28, scale: true },
      yAxis: { type: 'value', name: `${data.metric} (${dirWord(data.direction)})`, scale: true, nameTextStyle: { align: 'left' } },
      dataZoom: [{ type: 'inside' }],
      series,
    }));
    chart.on('click', (p) => goTrial(p.seriesType === 'scatter' ? p.data[2] : series[p.seriesIndex].trial.trial_id));
    chart.curveData = new Map(series.filter((s) => s.trial).map((s) => [s.trial.trial_id, s.data]));
    return chart;
  };

  /* Appends live reports to curves already on the chart; returns how many points were added. */
  HPO.appendToCurves = function appendToCurves(chart, reports) {
    const changed = new Map();
    for (const report of reports) {
      const points = chart.curveData && chart.curveData.get(report.trial_id);
      if (!points || report.value === null || points.some((p) => p[0] === report.step)) continue;
      points.push([report.step, report.value]);
      points.sort((a, b) => a[0] - b[0]);
      changed.set(report.trial_id, points);
    }
    if (changed.size) {
      chart.setOption({ series: [...changed].map(([id, data]) => ({ id: 'trial-' + id, data })) });
    }
    return changed.size;
  };

  /* Parallel coordinates of the parameters and the objective at one budget level. */
  HPO.parallelChart = function parallelChart(el, data, metric, direction) {
    const chart = HPO.chart(el);
    const axes = data.params.map((p, i) => (p.type === 'categorical'
      ? { dim: i, name: p.name, type: 'category', data: p.choices.map(String) }
      : { dim: i, name: p.name, type: p.log ? 'log' : 'value', min: p.low, max: p.high, scale: true }));
    const valueDim = data.params.length;
    axes.push({ dim: valueDim, name: metric, type: 'value', scale: true, nameTextStyle: { fontWeight: 'bold' } });
    const values = data.rows.map((r) => r[2]);
    const rows = data.rows.map((r) => [...r.slice(3).map((v, i) => (data.params[i].type === 'categorical' ? String(v) : v)), r[2], r[0], r[1]]);
    chart.setOption(base({
      grid: undefined,
      parallel: { left: 60, right: 90, top: 40, bottom: 30 },
      parallelAxis: axes,
      visualMap: {
        type: 'continuous', dimension: valueDim, min: Math.min(...values), max: Math.max(...values), calculable: true,
        inRange: { color: direction === 'maximize' ? ['#d94e5d', '#eac736', '#50a3ba'] : ['#50a3ba', '#eac736', '#d94e5d'] },
        right: 0, top: 'middle', itemHeight: 120, precision: 3, text: ['', metric],
      },
      series: [{ type: 'parallel', lineStyle: { width: 1, opacity: 0.45 }, emphasis: { lineStyle: { width: 2, opacity: 1 } },
        progressive: 200, data: rows }],
    }));
    chart.on('click', (p) => goTrial(p.data && p.data[valueDim + 1]));
    return chart;
  };

  HPO.importanceChart = function importanceChart(el, data) {
    const chart = HPO.chart(el);
    const entries = Object.entries(data.importances).sort((a, b) => a[1] - b[1]);
    chart.setOption(base({
      grid: { left: 16, right: 40, top: 16, bottom: 24, containLabel: true },
      tooltip: { trigger: 'item', formatter: (p) => `${p.name}: ${(100 * p.value).toFixed(1)} %` },
      xAxis: { type: 'value', max: 1, axisLabel: { formatter: (v) => `${Math.round(v * 100)} %` } },
      yAxis: { type: 'category', data: entries.map((e) => e[0]) },
      series: [{ type: 'bar', data: entries.map((e) => e[1]), itemStyle: { color: PALETTE[0] },
        label: { show: true, position: 'right', formatter: (p) => `${(100 * p.value).toFixed(1)} %` } }],
    }));
    return chart;
  };

  /* One trial's curve per attempt for one metric, with its rungs and what was decided there. */
  HPO.trialChart = function trialChart(el, overview, metric) {
    const chart = HPO.chart(el);
    const attempts = [...new Set(overview.curve.map((p) => p[1]))].sort((a, b) => a - b);
    const series = attempts.map((attempt, i) => ({
      id: 'attempt-' + attempt, name: `attempt ${attempt}`, type: 'line', showSymbol: overview.curve.length < 60,
      symbolSize: 4, color: PALETTE[i % PALETTE.length],
      data: overview.curve.filter((p) => p[1] === attempt).map((p) => [p[0], valueOf(p[2][metric])]),
    }));
    if (metric === overview.metric) {
      for (const [outcome, style] of Object.entries(OUTCOMES)) {
        const marks = overview.rungs.filter((r) => r.outcome === outcome)
          .map((r) => [r.budget, r.value, r.rung, r.reason || '']);
        if (marks.length) {
          series.push({ id: 'marks-' + outcome, name: outcome, type: 'scatter', symbol: style.symbol, symbolSize: 11, z: 4,
            itemStyle: { color: style.color }, data: marks });
        }
      }
    }
    const rungLines = overview.rungs.map((r) => ({ xAxis: r.budget, label: { formatter: `rung ${r.rung}` } }));
    if (series.length && rungLines.length) {
      series[0].markLine = { silent: true, symbol: 'none', lineStyle: { type: 'dashed', opacity: 0.5 }, data: rungLines };
    }
    chart.setOption(base({
      legend: { top: 4 },
      tooltip: {
        trigger: 'item', confine: true,
        formatter: (p) => (p.seriesType === 'scatter'
          ? `rung ${p.data[2]} (budget ${fmt.budget(p.data[0])}): <b>${p.seriesName}</b><br>${escapeHtml(metric)} ${fmt.num(p.data[1])}` +
            (p.data[3] ? '<br>' + escapeHtml(p.data[3]) : '')
          : `${p.seriesName} · step ${fmt.budget(p.data[0])}<br>${escapeHtml(metric)} ${fmt.num(p.data[1])}`),
      },
      xAxis: { type: 'value', name: 'budget (steps)', nameLocation: 'middle', nameGap: 28, scale: true },
      yAxis: { type: 'value', name: metric, scale: true, nameTextStyle: { align: 'left' } },
      dataZoom: [{ type: 'inside' }],
      series,
    }));
    chart.attemptData = new Map(series.filter((s) => s.id.startsWith('attempt-')).map((s) => [s.id, s.data]));
    return chart;
  };

  HPO.appendToTrialChart = function appendToTrialChart(chart, reports, metric) {
    let added = 0;
    for (const report of reports) {
      const id = 'attempt-' + report.attempt;
      if (!chart.attemptData.has(id)) {
        chart.attemptData.set(id, []);
        chart.setOption({ series: [{ id, name: `attempt ${report.attempt}`, type: 'line', showSymbol: true, symbolSize: 4, data: [] }] });
      }
      const points = chart.attemptData.get(id);
      if (points.some((p) => p[0] === report.step)) continue;
      points.push([report.step, valueOf(report.metrics[metric])]);
      points.sort((a, b) => a[0] - b[0]);
      chart.setOption({ series: [{ id, data: points }] });
      added += 1;
    }
    return added;
  };

  function valueOf(v) { return typeof v === 'number' ? v : null; }
  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  }
  HPO.escapeHtml = escapeHtml;
}());
