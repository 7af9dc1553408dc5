// The page: a home view (datasets, new job, jobs) and a job view at #/jobs/<id>.

import { api, sessionState, signOut } from "./api.js";
import { DatasetsPanel } from "./datasets.js";
import { JobForm } from "./jobform.js";
import { JobsPanel } from "./jobs.js";
import { JobView } from "./jobview.js";

const POLL_ACTIVE_MS = 2000;
const POLL_IDLE_MS = 10000;
const HEALTH_MS = 15000;

const homeView = document.getElementById("home-view");
const jobRoot = document.getElementById("job-view");
let jobView = null;
let pollTimer = null;

const jobForm = new JobForm({ onCreated: (job) => openJob(job.id) });
const jobsPanel = new JobsPanel({ onOpen: (id) => openJob(id) });
const datasetsPanel = new DatasetsPanel({
  onChange: (datasets) => {
    jobForm.setDatasets(datasets);
    jobsPanel.setDatasets(datasets);
  },
  onUse: (dataset, { scroll }) => {
    jobForm.selectDataset(dataset.id);
    if (scroll) document.getElementById("jobform-panel").scrollIntoView({ behavior: "smooth", block: "start" });
  },
});

function openJob(id) {
  window.location.hash = `#/jobs/${id}`;
}

/** Poll the jobs list often while something runs, rarely otherwise; only on the home view. */
async function pollJobs() {
  clearTimeout(pollTimer);
  if (homeView.hidden) return;
  await jobsPanel.refresh();
  pollTimer = setTimeout(pollJobs, jobsPanel.hasActive() ? POLL_ACTIVE_MS : POLL_IDLE_MS);
}

function route() {
  const match = /^#\/jobs\/([^/]+)$/.exec(window.location.hash);
  // #/new/<dataset id>: the job form for that dataset (after "New job from these classes").
  const newJob = /^#\/new\/([^/]+)$/.exec(window.location.hash);
  if (jobView) {
    jobView.destroy();
    jobView = null;
  }
  if (match) {
    homeView.hidden = true;
    jobRoot.hidden = false;
    clearTimeout(pollTimer);
    jobView = new JobView(jobRoot, decodeURIComponent(match[1]), { onGone: () => (window.location.hash = "#/") });
    jobView.start();
    window.scrollTo(0, 0);
  } else {
    jobRoot.hidden = true;
    jobRoot.replaceChildren();
    homeView.hidden = false;
    datasetsPanel.refresh().then(() => {
      if (!newJob) return;
      jobForm.selectDataset(decodeURIComponent(newJob[1]));
      document.getElementById("jobform-panel").scrollIntoView({ block: "start" });
    });
    pollJobs();
  }
}

async function checkHealth() {
  const el = document.getElementById("health");
  try {
    const health = await api("/api/health");
    const workers = (health.workers || []).length;
    const ok = health.status === "ok" && workers > 0;
    el.className = `health ${ok ? "ok" : "warn"}`;
    el.textContent = `${workers} worker${workers === 1 ? "" : "s"} · database ${health.database} · broker ${health.broker}`;
    if (typeof window.Plotly === "undefined") {
      el.className = "health bad";
      el.textContent += " · plotly.min.js did not load: no plots";
    }
  } catch (err) {
    el.className = "health bad";
    el.textContent = err.status ? `server: ${err.message}` : "server unreachable";
  }
  setTimeout(checkHealth, HEALTH_MS);
}

/** "Sign out" while this browser holds a session cookie of a server that asks for a token. */
async function showSession() {
  const button = document.getElementById("sign-out");
  try {
    const state = await sessionState();
    button.hidden = !(state.token_required && state.signed_in);
  } catch {
    button.hidden = true;
  }
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await signOut();
  window.location.reload();
});
document.addEventListener("cryoclust:signed-in", showSession);

window.addEventListener("hashchange", route);
showSession();
route();
checkHealth();
