"""The dashboard in headless Chromium: each page renders its charts with the server's data,
paging and filters work, a report sent during the test shows up live, no console errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.browser.conftest import LiveServer, chart_series, screenshot, wait_until

pytestmark = pytest.mark.slow


COUNT_IS = "n => document.querySelector('[data-testid=trials-count]').textContent.includes(`of ${n} trials`)"


def api(live: LiveServer, path: str, **params: Any) -> Any:
    response = httpx.get(f"{live.url}/api/v1{path}", params=params, headers=live.headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_studies_page_lists_searches_filters_and_controls_studies(page: Any, live_server: LiveServer) -> None:
    page.goto("/#/")
    rows = page.locator("[data-testid=studies-table] tbody tr")
    rows.first.wait_for()
    assert rows.count() == 3
    main = page.locator("tr", has_text="dashboard-demo")
    assert "completed" in main.inner_text() and "completed" in main.locator(".counts").inner_text()
    screenshot(page, "studies")

    only = ("names => [...document.querySelectorAll('[data-testid=studies-table] tbody td:first-child a')]"
            ".map(a => a.textContent).join() === names")
    page.get_by_label("Search studies by name").fill("paused")
    wait_until(page, only, "paused-sweep")
    page.get_by_label("Search studies by name").fill("")
    page.get_by_label("Filter by status").select_option("completed")
    wait_until(page, only, "dashboard-demo")
    page.get_by_label("Filter by status").select_option("")
    wait_until(page, "() => document.querySelectorAll('[data-testid=studies-table] tbody tr').length === 3")

    paused = page.locator("tr", has_text="paused-sweep")
    paused.locator("[data-action=resume]").click()
    page.locator("tr", has_text="paused-sweep").locator(".badge.running").wait_for()
    page.locator("tr", has_text="paused-sweep").locator("[data-action=pause]").click()
    page.locator("tr", has_text="paused-sweep").locator(".badge.paused").wait_for()


def test_study_page_charts_show_the_servers_downsampled_data(page: Any, live_server: LiveServer) -> None:
    study_id = live_server.studies["main"].study_id
    page.goto(f"/#/study/{study_id}")
    history = api(live_server, f"/studies/{study_id}/history", max_points=2000)
    series = chart_series(page, "history-chart")
    assert len(series) == 2 * len(history["levels"])
    assert sum(s["points"] for s in series if s["type"] == "scatter") == len(history["points"])
    newest = history["points"][-1][0]
    extended = sum(1 for level in history["levels"]  # each best line runs on to the newest result
                   if [b for b in history["best"] if b[3] == level][-1][0] < newest)
    assert sum(s["points"] for s in series if s["type"] == "line") == len(history["best"]) + extended

    curves = api(live_server, f"/studies/{study_id}/curves", max_trials=100, top=10, max_points=100)
    series = chart_series(page, "curves-chart")
    lines = [s for s in series if s["type"] == "line"]
    assert len(lines) == len(curves["curves"])
    assert sum(s["points"] for s in lines) == sum(len(c["points"]) for c in curves["curves"])
    marks = sum(len(c["rungs"]) for c in curves["curves"])
    assert sum(s["points"] for s in series if s["type"] == "scatter") == marks

    parallel = api(live_server, f"/studies/{study_id}/parallel", max_points=500, top=50)
    assert [s["points"] for s in chart_series(page, "parallel-chart")] == [len(parallel["rows"])]
    importance = api(live_server, f"/studies/{study_id}/importance")
    assert chart_series(page, "importance-chart")[0]["points"] == len(importance["importances"])

    cells = api(live_server, f"/studies/{study_id}/hyperband")["cells"]
    assert page.locator("[data-testid=hyperband-table] td[data-cell]").count() == len(cells)
    first = page.locator("[data-testid=hyperband-table] td[data-cell='0/0']").inner_text()
    assert f"{cells[0]['entered']} entered" in first
    page.locator("[data-testid=trials-table]").wait_for()
    screenshot(page, "study")

    page.locator("[data-testid=curves-chart]").scroll_into_view_if_needed()
    page.get_by_role("button", name="By state").click()
    legend = wait_until(page, """() => {
        const chart = echarts.getInstanceByDom(document.querySelector('[data-testid=curves-chart]'));
        const names = chart ? chart.getOption().legend[0].data : [];
        return names.includes('completed') ? names : null;
    }""")
    assert {"completed", "stopped"} <= set(legend)
    page.get_by_role("button", name="Budget spent").click()
    wait_until(page, "() => echarts.getInstanceByDom(document.querySelector('[data-testid=history-chart]'))"
                     ".getOption().xAxis[0].name === 'budget spent'")


def test_trials_table_pages_sorts_and_filters_on_the_server(page: Any, live_server: LiveServer) -> None:
    study_id = live_server.studies["main"].study_id
    total = api(live_server, f"/studies/{study_id}/trial-table")["total"]
    page.goto(f"/#/study/{study_id}")
    count = page.locator("[data-testid=trials-count]")
    count.wait_for()
    assert f"of {total} trials" in count.inner_text() and total > 50
    page.locator("[data-page=next]").click()
    wait_until(page, "() => document.querySelector('[data-testid=trials-count]').textContent.startsWith('51')")
    assert page.locator("[data-testid=trials-table] tbody tr").first.locator("td").first.inner_text() == "#50"

    page.locator("th[data-sort=value]").click()
    wait_until(page, "() => document.querySelector('th[data-sort=value]').classList.contains('sorted-asc')")
    values = page.locator("[data-testid=trials-table] tbody tr td:nth-child(6)").all_inner_texts()
    numbers = [float(v.replace(",", "")) for v in values if v != "—"]
    assert numbers == sorted(numbers)

    page.get_by_label("State").select_option("completed")
    completed = api(live_server, f"/studies/{study_id}/trial-table", state="completed")["total"]
    wait_until(page, COUNT_IS, completed)
    page.get_by_label("Parameter").select_option("lr")
    page.get_by_label("Minimum").fill("0.001")
    page.get_by_label("Maximum").fill("0.01")
    page.locator("[data-filter=param-add]").click()
    page.locator("[data-chip='lr:0.001:0.01']").wait_for()
    expected = api(live_server, f"/studies/{study_id}/trial-table", state="completed", param="lr:0.001:0.01")
    if expected["total"]:
        wait_until(page, COUNT_IS, expected["total"])
        assert page.locator("[data-testid=trials-table] tbody tr").count() == expected["total"]
    else:
        page.get_by_text("No trial matches these filters.").wait_for()
    screenshot(page, "study-trials-filtered", docs=False)


def test_trial_page_shows_params_curve_rungs_and_attempts(page: Any, live_server: LiveServer) -> None:
    trial_id = live_server.studies["main"].requeued_trial
    overview = api(live_server, f"/trials/{trial_id}/overview")
    page.goto(f"/#/trial/{trial_id}")
    series = chart_series(page, "trial-chart")
    attempts = [s for s in series if s["type"] == "line"]
    assert [s["name"] for s in attempts] == ["attempt 1", "attempt 2"]
    assert sum(s["points"] for s in attempts) == len(overview["curve"])
    assert sum(s["points"] for s in series if s["type"] == "scatter") == len(overview["rungs"])
    rows = page.locator("[data-testid=attempts-table] tbody tr")
    assert rows.count() == 2
    assert "requeue" in rows.first.inner_text() and "CUDA out of memory" in rows.first.inner_text()
    assert page.locator("[data-testid=params-table] tr").count() == 3
    assert page.locator("[data-testid=checkpoint]").inner_text().startswith("file://")
    assert page.locator("[data-testid=rungs-table] tbody tr").count() == len(overview["rungs"])
    page.get_by_role("link", name="dashboard-demo").first.wait_for()
    screenshot(page, "trial")


def test_workers_page_shows_live_workers_and_what_they_run(page: Any, live_server: LiveServer) -> None:
    study_id = live_server.studies["running"].study_id
    resources = {"gpu_slot": 1, "hostname": "gpu-box"}
    grant = httpx.post(f"{live_server.url}/api/v1/leases", headers=live_server.headers, timeout=30, json={
        "worker_id": "gpu-box-7", "studies": [study_id], "wait_s": 5, "resources": resources}).json()
    page.goto("/#/workers")
    row = page.locator("tr[data-worker=gpu-box-7]")
    row.wait_for()
    text = row.inner_text()
    assert "running" in text and f"trial #{grant['number']}" in text and "live-sweep" in text and "gpu-box" in text
    assert row.locator("td").nth(5).inner_text() == "1"
    assert page.locator("[data-testid=workers-table] tbody tr").count() >= 4
    screenshot(page, "workers")
    row.get_by_role("link", name=f"trial #{grant['number']}").click()
    page.wait_for_url(f"**/#/trial/{grant['trial_id']}")
    page.locator("h1", has_text=f"Trial #{grant['number']}").wait_for()


def test_a_report_sent_during_the_test_shows_up_live(page: Any, browser: Any, live_server: LiveServer) -> None:
    study_id = live_server.studies["running"].study_id
    grant = httpx.post(f"{live_server.url}/api/v1/leases", headers=live_server.headers, timeout=30,
                       json={"worker_id": "live-test", "studies": [study_id], "wait_s": 5}).json()
    token = grant["lease_token"]
    httpx.post(f"{live_server.url}/api/v1/trials/{grant['trial_id']}/reports", headers=live_server.headers, timeout=30,
               json={"lease_token": token, "reports": [{"step": 0.25, "metrics": {"loss": 1.25}}]})
    page.goto(f"/#/trial/{grant['trial_id']}")
    before = sum(s["points"] for s in chart_series(page, "trial-chart") if s["type"] == "line")
    study_page = page.context.new_page()
    study_page.goto(f"/#/study/{study_id}")
    study_page.locator("#live.on").wait_for()  # the study page's stream is open
    page.locator("#live.on").wait_for()
    page.wait_for_timeout(1200)  # and its first poll has run
    httpx.post(f"{live_server.url}/api/v1/trials/{grant['trial_id']}/reports", headers=live_server.headers, timeout=30,
               json={"lease_token": token, "reports": [{"step": 0.5, "metrics": {"loss": 0.875}}]})
    wait_until(page, """n => echarts.getInstanceByDom(document.querySelector('[data-testid=trial-chart]')).getOption()
                   .series.filter(s => s.type === 'line').reduce((a, s) => a + s.data.length, 0) === n""",
               before + 1, timeout=10)
    assert "(live)" in page.locator("[data-testid=curve-note]").inner_text()
    item = study_page.locator("[data-testid=activity] li", has_text=f"trial #{grant['number']}")
    item.first.wait_for(timeout=10_000)
    assert "0.875" in item.first.inner_text()
    screenshot(study_page, "study-live")
    study_page.close()


def test_dark_theme_and_error_messages(page: Any, live_server: LiveServer, expected_console_errors: list[str]) -> None:
    study_id = live_server.studies["main"].study_id
    page.goto(f"/#/study/{study_id}")
    page.locator("[data-testid=history-chart] canvas").wait_for()
    page.get_by_role("button", name="Dark").click()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.locator("[data-testid=curves-chart] canvas").wait_for()
    page.locator("[data-testid=trials-table]").wait_for()
    screenshot(page, "study-dark")
    expected_console_errors.append("404 (Not Found)")  # the browser logs the failed request itself
    page.goto("/#/trial/987654")
    page.get_by_role("alert").wait_for()
    assert "trial 987654 does not exist" in page.get_by_role("alert").inner_text()
    page.get_by_role("button", name="Light").click()


def test_a_browser_without_a_session_is_asked_for_a_token(signed_out: Any, live_server: LiveServer,
                                                         expected_console_errors: list[str]) -> None:
    expected_console_errors.extend(["401 (Unauthorized)", "EventSource"])  # the browser logs refused requests
    page = signed_out.new_page()
    page.goto("/#/")
    page.get_by_label("API token").fill("hpo_wrong")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").wait_for()
    page.get_by_label("API token").fill(live_server.processes.token)
    page.get_by_role("button", name="Sign in").click()
    page.locator("[data-testid=studies-table]").wait_for()
    screenshot(page, "studies-after-sign-in", docs=False)
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API token").wait_for()
