// The spard viewer: reads the motion from the page's JSON, draws bodies as bones (cylinders) and
// joints (spheres) with three.js, and lets the user pick the window, the futures and the time.
// Positions arrive in millimetres, z up; each pose is J joints x 3 numbers, frames one after another.

const $ = (id) => document.getElementById(id);

// three.js travels inside the page as gzip + base64: unpack each module into a blob: URL, pointing
// its import (`from './three.core.js'`, `from 'three'`) at the module unpacked before it.
async function loadModules() {
  const urls = {};
  for (const script of document.querySelectorAll("script[data-module]")) {
    const bytes = Uint8Array.from(atob(script.textContent.trim()), (c) => c.charCodeAt(0));
    const unzipped = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    let text = await new Response(unzipped).text();
    const { imports, from } = script.dataset;
    if (imports) text = text.replaceAll(`from '${imports}'`, `from '${urls[from]}'`);
    urls[script.dataset.module] = URL.createObjectURL(new Blob([text], { type: "text/javascript" }));
  }
  return { THREE: await import(urls.three), OrbitControls: (await import(urls.controls)).OrbitControls };
}

function fail(text) {
  $("message").textContent = text;
  $("message").style.display = "block";
}

const data = JSON.parse($("motion").textContent);
const { THREE, OrbitControls } = await loadModules().catch((error) => {
  fail(`cannot start the viewer in this browser (${error.message}); use a current Chrome, Firefox or Safari`);
  throw error;
});

const J = data.joints.length;
const T = data.t_his + data.t_pred;
const state = { window: 0, sample: "all", frame: 0, playing: true };

// ------------------------------------------------------------------------------------------ poses

// The pose of a flat [frames * J * 3] millimetre sequence at `frame`, in metres; body-centred:
// the root's x and y taken out.
function pose(sequence, frame, centred) {
  const out = new Float32Array(J * 3);
  const base = frame * J * 3;
  for (let i = 0; i < J * 3; i++) out[i] = sequence[base + i] / 1000;
  if (centred) {
    const [x, y] = [out[0], out[1]];
    for (let j = 0; j < J; j++) { out[3 * j] -= x; out[3 * j + 1] -= y; }
  }
  return out;
}

// Every pose a window shows (history, ground truth, futures) gives its box: [min xyz, max xyz].
function bounds(win, centred) {
  const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
  const sequences = [[win.history, data.t_his], ...win.futures.map((f) => [f, data.t_pred])];
  if (win.truth) sequences.push([win.truth, data.t_pred]);
  for (const [sequence, frames] of sequences) {
    for (let f = 0; f < frames; f++) {
      const p = pose(sequence, f, centred);
      for (let i = 0; i < p.length; i++) {
        lo[i % 3] = Math.min(lo[i % 3], p[i]);
        hi[i % 3] = Math.max(hi[i % 3], p[i]);
      }
    }
  }
  return [lo, hi];
}

// ------------------------------------------------------------------------------------------ scene

const renderer = (() => {
  try {
    return new THREE.WebGLRenderer({ antialias: true });
  } catch (error) {
    fail(`WebGL 2 is not available here (${error.message}): turn on hardware acceleration or use another browser`);
    throw error;
  }
})();
renderer.setPixelRatio(window.devicePixelRatio);
$("scene").appendChild(renderer.domElement);
const scene = new THREE.Scene();
scene.background = new THREE.Color("#f4f4f4");
scene.add(new THREE.HemisphereLight("#ffffff", "#8a8a8a", 2.2));
const sun = new THREE.DirectionalLight("#ffffff", 1.5);
sun.position.set(2, -3, 5);
scene.add(sun);
const camera = new THREE.PerspectiveCamera(35, 1, 0.01, 200);
camera.up.set(0, 0, 1);  // z up, as in the data
const controls = new OrbitControls(camera, renderer.domElement);
controls.addEventListener("change", draw);

const floor = new THREE.Group();
scene.add(floor);

// One body: bones as a cylinder per bone, joints as spheres, coloured by side (left, right, centre);
// a bone takes the side of the joint it ends at.
class Body {
  constructor(colours, opacity = 1) {
    const material = (c) => new THREE.MeshLambertMaterial({
      color: c, transparent: opacity < 1, opacity, depthWrite: opacity === 1 });
    const cylinder = new THREE.CylinderGeometry(1, 1, 1, 10);  // radius 1, height 1 along y
    this.bones = new THREE.InstancedMesh(cylinder, material("#ffffff"), data.bones.length);
    this.joints = new THREE.InstancedMesh(new THREE.SphereGeometry(1, 12, 8), material("#ffffff"), J);
    data.bones.forEach(([child], i) => this.bones.setColorAt(i, new THREE.Color(colours[data.sides[child]])));
    data.sides.forEach((side, j) => this.joints.setColorAt(j, new THREE.Color(colours[side])));
    this.group = new THREE.Group();
    this.group.add(this.bones, this.joints);
    scene.add(this.group);
  }

  show(p, radius) {  // p: [J * 3] metres
    const m = new THREE.Matrix4(), q = new THREE.Quaternion(), up = new THREE.Vector3(0, 1, 0);
    const a = new THREE.Vector3(), b = new THREE.Vector3(), mid = new THREE.Vector3();
    data.bones.forEach(([child, parent], i) => {
      a.fromArray(p, 3 * parent);
      b.fromArray(p, 3 * child);
      const length = a.distanceTo(b);
      q.setFromUnitVectors(up, b.clone().sub(a).normalize());
      m.compose(mid.addVectors(a, b).multiplyScalar(0.5), q, new THREE.Vector3(radius, length, radius));
      this.bones.setMatrixAt(i, m);
    });
    for (let j = 0; j < J; j++) {
      m.compose(a.fromArray(p, 3 * j), q.identity(), new THREE.Vector3(1, 1, 1).multiplyScalar(1.4 * radius));
      this.joints.setMatrixAt(j, m);
    }
    this.bones.instanceMatrix.needsUpdate = true;
    this.joints.instanceMatrix.needsUpdate = true;
    this.group.visible = true;
  }
}

const observed = new Body(data.colours.history);
const truth = new Body(data.colours.truth);
const single = new Body(data.colours.future);  // the one picked future
const cloud = Array.from({ length: data.windows[0].futures.length }, () => new Body(data.colours.future, 0.45));

// ------------------------------------------------------------------------------------------ drawing

let size = 1;  // the window's height, for bone thickness

function frameWindow() {  // the camera looks at the whole window from the front-left, slightly above
  const [lo, hi] = bounds(data.windows[state.window], $("centred").checked);
  const centre = new THREE.Vector3().fromArray(lo).add(new THREE.Vector3().fromArray(hi)).multiplyScalar(0.5);
  const radius = Math.max(0.5 * Math.hypot(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]), 0.5);
  size = Math.max(hi[2] - lo[2], 0.5);
  const distance = 1.5 * radius / Math.sin(THREE.MathUtils.degToRad(camera.fov / 2));
  const azimuth = THREE.MathUtils.degToRad(-60), elevation = THREE.MathUtils.degToRad(15);
  controls.target.copy(centre);
  camera.position.set(
    centre.x + distance * Math.cos(elevation) * Math.cos(azimuth),
    centre.y + distance * Math.cos(elevation) * Math.sin(azimuth),
    centre.z + distance * Math.sin(elevation));
  floor.clear();
  const extent = 2 * Math.max(hi[0] - lo[0], hi[1] - lo[1], 2);
  const grid = new THREE.GridHelper(extent, Math.round(extent / 0.25), "#9a9a9a", "#cfcfcf");
  grid.rotation.x = Math.PI / 2;  // from the x-z plane to the floor (x-y)
  grid.position.set(centre.x, centre.y, lo[2]);
  floor.add(grid);
  controls.update();
}

function draw() {
  const win = data.windows[state.window], t = state.frame, centred = $("centred").checked;
  const radius = 0.012 * size;
  for (const body of [observed, truth, single, ...cloud]) body.group.visible = false;
  if (t < data.t_his) {
    observed.show(pose(win.history, t, centred), radius);
    $("clock").textContent = `history ${((t + 1) / data.fps).toFixed(2)} s`;
  } else {
    const f = t - data.t_his;
    if (win.truth && $("truth").checked) truth.show(pose(win.truth, f, centred), radius);
    if (state.sample === "all") win.futures.forEach((future, k) => cloud[k].show(pose(future, f, centred), radius));
    else single.show(pose(win.futures[state.sample], f, centred), radius);
    $("clock").textContent = `prediction +${((f + 1) / data.fps).toFixed(2)} s`;
  }
  $("slider").value = t;
  renderer.render(scene, camera);
  document.body.dataset.frame = t;  // for tests and scripts: what is on screen
  document.body.dataset.drawn = Number(document.body.dataset.drawn || 0) + 1;
}

function resize() {
  renderer.setSize(window.innerWidth, window.innerHeight);
  camera.aspect = window.innerWidth / window.innerHeight;
  camera.updateProjectionMatrix();
  draw();
}

// ------------------------------------------------------------------------------------------ controls

data.windows.forEach((win, i) => $("window").add(new Option(win.name, i)));
$("sample").add(new Option(`all ${cloud.length}`, "all"));
for (let k = 0; k < cloud.length; k++) $("sample").add(new Option(`sample ${k + 1}`, k));
$("truth").parentElement.hidden = !data.windows.some((win) => win.truth);
$("slider").max = T - 1;

$("window").onchange = () => { state.window = Number($("window").value); frameWindow(); draw(); };
$("sample").onchange = () => {
  state.sample = $("sample").value === "all" ? "all" : Number($("sample").value);
  draw();
};
$("truth").onchange = draw;
$("centred").onchange = () => { frameWindow(); draw(); };
$("slider").oninput = () => { state.frame = Number($("slider").value); setPlaying(false); draw(); };
$("play").onclick = () => setPlaying(!state.playing);
document.addEventListener("keydown", (event) => {  // space: play/pause; arrows: one frame back or on
  if (["SELECT", "INPUT", "BUTTON"].includes(event.target.tagName)) return;  // they have their own keys
  const step = { ArrowLeft: -1, ArrowRight: 1 }[event.key];
  if (event.key === " ") setPlaying(!state.playing);
  else if (step) { setPlaying(false); state.frame = (state.frame + step + T) % T; draw(); }
  else return;
  event.preventDefault();
});

function setPlaying(playing) {
  state.playing = playing;
  $("play").textContent = playing ? "pause" : "play";
}

let last = null;
function tick(now) {  // plays at the data's frame rate, looping
  if (state.playing && last !== null && now - last >= 1000 / data.fps) {
    state.frame = (state.frame + 1) % T;
    last = now;
    draw();
  }
  if (last === null || !state.playing) last = now;
  requestAnimationFrame(tick);
}

const swatches = (c) => `<span class="swatch" style="background:${c.left}"></span>` +
  `<span class="swatch" style="background:${c.right}"></span>`;
$("legend").innerHTML = [["history", data.colours.history], ["futures", data.colours.future]]
  .concat(data.windows.some((win) => win.truth) ? [["ground truth", data.colours.truth]] : [])
  .map(([name, c]) => `<div>${swatches(c)} ${name} (left, right)</div>`).join("");
$("about").textContent = `${data.title} · sampler ${data.sampler} · ${data.fps} fps · ` +
  `${data.t_his} observed + ${data.t_pred} predicted frames` +
  (data.checkpoint ? ` · checkpoint sha256 ${data.checkpoint.slice(0, 12)}…` : "") +
  "\ndrag: turn · right-drag: move · wheel: zoom · space: play/pause · ← →: one frame";

window.addEventListener("resize", resize);
frameWindow();
resize();
requestAnimationFrame(tick);
document.body.dataset.ready = "true";
