// fastinfer's try-a-model page. Plain JavaScript, no build step, nothing
// fetched but this server's own API. Every value from the API reaches the
// page as text (textContent, attributes), never as HTML.
'use strict';

(() => {
	const $ = (id) => document.getElementById(id);
	const ui = {
		model: $('model'), modelMeta: $('model-meta'), tokenField: $('token-field'), token: $('token'), file: $('file'), drop: $('drop'),
		preview: $('preview'), filename: $('filename'), error: $('error'),
		result: $('result'), status: $('status'), predictions: $('predictions'), timing: $('timing'),
		card: $('card'), facts: $('card-facts'), accuracy: $('accuracy'), notes: $('card-notes'),
		confusion: $('confusion'), curves: $('curves'), charts: $('charts'), serverInfo: $('server-info'),
	};
	const TOP_K = 5;
	const SVG_NS = 'http://www.w3.org/2000/svg';

	const models = new Map(); // option value → model version from /v1/models
	let image = null; // the File (or Blob) being classified
	let previewURL = null;
	let seq = 0; // answers to older requests are dropped
	const TOKEN_KEY = 'fastinfer.token';
	let token = ''; // the API bearer token, when the server asks for one
	try {
		token = sessionStorage.getItem(TOKEN_KEY) || '';
	} catch (_) {
		// storage may be off; the token then lives until the page reloads
	}
	if (token) {
		ui.token.value = token;
		ui.tokenField.hidden = false;
	}

	// el builds an element: attrs are attributes ("text" sets textContent),
	// children are nodes or strings.
	function el(tag, attrs, ...children) {
		return build(document.createElement(tag), attrs, children);
	}
	function svg(tag, attrs, ...children) {
		return build(document.createElementNS(SVG_NS, tag), attrs, children);
	}
	function build(node, attrs, children) {
		for (const [k, v] of Object.entries(attrs || {})) {
			if (v === undefined || v === null || v === false) continue;
			if (k === 'text') node.textContent = v;
			else node.setAttribute(k, v === true ? '' : String(v));
		}
		for (const c of children) {
			if (c !== null && c !== undefined && c !== false) node.append(c);
		}
		return node;
	}

	const num = (x) => typeof x === 'number' && Number.isFinite(x);
	const int = (n) => (num(n) ? n.toLocaleString('en-US') : String(n));
	function pct(x) {
		if (!num(x)) return '–';
		const p = x * 100;
		if (p > 0 && p < 0.01) return '<0.01%';
		return (p < 1 ? p.toFixed(2) : p.toFixed(1)) + '%';
	}
	function ms(x) {
		if (!num(x)) return '–';
		return (x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0)) + ' ms';
	}

	// ---- API ----

	class APIError extends Error {
		constructor(status, code, message) {
			super(message);
			this.status = status;
			this.code = code;
		}
	}

	// api fetches url and returns its JSON, or throws an APIError carrying
	// the server's {"error":{"code","message"}} when there is one.
	async function api(url, opts) {
		let resp;
		try {
			resp = await fetch(url, opts);
		} catch (e) {
			throw new APIError(0, 'network', 'Could not reach the server (' + e.message + ').');
		}
		const text = await resp.text();
		let body = null;
		try {
			body = JSON.parse(text);
		} catch (_) {
			// not JSON: handled below
		}
		if (!resp.ok) {
			const e = body && body.error;
			throw new APIError(resp.status, (e && e.code) || 'http_' + resp.status,
				(e && e.message) || text.trim() || resp.statusText || 'request failed');
		}
		if (body === null) throw new APIError(resp.status, 'bad_response', 'The server answered with something that is not JSON.');
		return body;
	}

	function showError(title, err) {
		const parts = [el('strong', { text: title })];
		if (err instanceof APIError) {
			const p = el('p', {});
			if (err.status) p.append('HTTP ' + err.status + ' ');
			p.append(el('code', { text: err.code }), ' ', err.message);
			parts.push(p);
		} else if (err) {
			parts.push(el('p', { text: String(err.message || err) }));
		}
		ui.error.replaceChildren(...parts);
		ui.error.hidden = false;
	}
	function clearError() {
		ui.error.hidden = true;
		ui.error.replaceChildren();
	}

	// ---- models ----

	async function loadModels() {
		let body;
		try {
			body = await api('/v1/models');
		} catch (e) {
			ui.model.replaceChildren(el('option', { value: '', text: 'No models' }));
			ui.model.disabled = true;
			showError('Could not list the models', e);
			return;
		}
		const list = Array.isArray(body.models) ? body.models : [];
		const latest = new Map();
		for (const m of list) {
			const cur = latest.get(m.name);
			if (!cur || Number(m.version) > Number(cur.version)) latest.set(m.name, m);
		}
		models.clear();
		const opts = [];
		for (const m of list) {
			const isLatest = latest.get(m.name) === m;
			// The latest version is addressed by name alone, as
			// /v1/models/{name}/classify does; older ones by name@version.
			const value = isLatest ? m.name : m.name + '@' + m.version;
			const several = Array.isArray(m.versions) && m.versions.length > 1;
			models.set(value, { ...m, latest: isLatest });
			const tensorsOnly = m.images_note ? ' (tensors only)' : '';
			opts.push(el('option', { value, text: `${m.name}  v${m.version}${isLatest && several ? ' (latest)' : ''}${tensorsOnly}` }));
		}
		if (!opts.length) {
			ui.model.replaceChildren(el('option', { value: '', text: 'No models are served' }));
			ui.model.disabled = true;
			showError('No models', new APIError(0, 'no_models', 'The server has no model to try: put one in its model repository.'));
			return;
		}
		ui.model.replaceChildren(...opts);
		ui.model.disabled = false;
		const wanted = new URLSearchParams(location.search).get('model');
		const first = [...models.keys()].find((v) => models.get(v).latest);
		ui.model.value = wanted && models.has(wanted) ? wanted : first;
		modelChanged();
	}

	function selected() {
		return models.get(ui.model.value) || null;
	}

	function modelChanged() {
		const m = selected();
		if (!m) return;
		const bits = [`version ${m.version}`, `provider ${m.provider}`];
		if (num(m.classes)) bits.push(`${m.classes} classes`);
		const input = m.inputs && m.inputs[0];
		if (input && Array.isArray(input.shape)) bits.push(`input ${input.datatype} [${input.shape.join(', ')}]`);
		if (m.batching && m.batching.max_batch_size > 0) bits.push(`batches up to ${m.batching.max_batch_size}`);
		if (!m.labels) bits.push('no labels');
		// Such a model answers an image with 400 and why; say it first.
		if (m.images_note) bits.push('takes tensors only: ' + m.images_note);
		ui.modelMeta.textContent = bits.join(' · ');
		if (m.provider_note) ui.modelMeta.title = m.provider_note;
		renderCard(m);
		if (image) classify();
	}

	// ---- image in ----

	function setImage(file) {
		if (!file) return;
		image = file;
		if (previewURL) URL.revokeObjectURL(previewURL);
		previewURL = URL.createObjectURL(file);
		const name = file.name || 'pasted image';
		ui.preview.hidden = false;
		ui.preview.alt = 'Preview of ' + name;
		ui.preview.src = previewURL;
		ui.filename.hidden = false;
		ui.filename.textContent = `${name} · ${int(file.size)} bytes`;
		classify();
	}

	ui.preview.addEventListener('load', () => {
		// Tiny images (28×28 Fashion-MNIST) are shown enlarged with sharp pixels.
		ui.preview.classList.toggle('small', ui.preview.naturalWidth < 96);
	});
	ui.preview.addEventListener('error', () => {
		if (ui.preview.src) {
			ui.preview.hidden = true;
			ui.filename.textContent += ' · the browser cannot show it';
		}
	});

	ui.file.addEventListener('change', () => setImage(ui.file.files && ui.file.files[0]));
	ui.model.addEventListener('change', modelChanged);
	ui.token.addEventListener('change', () => {
		token = ui.token.value.trim();
		try {
			if (token) sessionStorage.setItem(TOKEN_KEY, token);
			else sessionStorage.removeItem(TOKEN_KEY);
		} catch (_) {
			// kept in memory only
		}
		if (image) classify();
	});

	for (const type of ['dragenter', 'dragover']) {
		ui.drop.addEventListener(type, (e) => {
			e.preventDefault();
			e.dataTransfer.dropEffect = 'copy';
			ui.drop.classList.add('over');
		});
	}
	ui.drop.addEventListener('dragleave', (e) => {
		if (!ui.drop.contains(e.relatedTarget)) ui.drop.classList.remove('over');
	});
	ui.drop.addEventListener('drop', (e) => {
		e.preventDefault();
		ui.drop.classList.remove('over');
		const f = e.dataTransfer.files && e.dataTransfer.files[0];
		if (f) setImage(f);
		else showError('Nothing to classify', new Error('Drop an image file, not a link or text.'));
	});
	// A file dropped beside the zone must not navigate away from the page.
	window.addEventListener('dragover', (e) => e.preventDefault());
	window.addEventListener('drop', (e) => e.preventDefault());
	document.addEventListener('paste', (e) => {
		const items = e.clipboardData ? [...e.clipboardData.items] : [];
		const it = items.find((i) => i.kind === 'file' && i.type.startsWith('image/'));
		if (it) setImage(it.getAsFile());
	});

	// ---- classify ----

	async function classify() {
		const m = selected();
		if (!m || !image) return;
		const my = ++seq;
		clearError();
		ui.result.classList.add('busy');
		ui.result.setAttribute('aria-busy', 'true');
		ui.status.textContent = `Classifying with ${m.name} v${m.version}…`;
		const path = '/v1/models/' + encodeURIComponent(m.name) +
			(m.latest ? '' : '/versions/' + encodeURIComponent(m.version)) + '/classify?top_k=' + TOP_K;
		const t0 = performance.now();
		try {
			const headers = { 'Content-Type': image.type || 'application/octet-stream' };
			if (token) headers.Authorization = 'Bearer ' + token;
			const body = await api(path, { method: 'POST', headers, body: image });
			const rtt = performance.now() - t0;
			if (my !== seq) return;
			const preds = body.results && body.results[0] && body.results[0].predictions;
			if (!Array.isArray(preds)) throw new APIError(0, 'bad_response', 'The answer has no predictions.');
			renderPredictions(preds);
			renderTiming(body.timing_ms || {}, rtt);
			ui.status.textContent = `${body.model} v${body.version} answered in ${ms(rtt)}.`;
			markPrediction(preds[0]);
		} catch (e) {
			if (my !== seq) return;
			ui.predictions.replaceChildren();
			ui.timing.replaceChildren();
			ui.status.textContent = 'No answer.';
			markPrediction(null);
			showError('Classification failed', e);
			if (e instanceof APIError && e.status === 401) {
				ui.tokenField.hidden = false;
				ui.token.focus();
			}
		} finally {
			if (my === seq) {
				ui.result.classList.remove('busy');
				ui.result.removeAttribute('aria-busy');
			}
		}
	}

	function renderPredictions(preds) {
		ui.predictions.replaceChildren(...preds.map((p, i) => {
			const hasLabel = typeof p.label === 'string' && p.label !== '';
			const label = el('span', { class: 'label', text: hasLabel ? p.label : `class ${p.index}` });
			const fill = el('span', { class: 'fill' });
			fill.style.width = Math.max(0, Math.min(100, (num(p.score) ? p.score : 0) * 100)) + '%';
			return el('li', { class: i === 0 ? 'prediction top' : 'prediction', title: `class index ${p.index}` },
				label,
				el('span', { class: 'bar', 'aria-hidden': 'true' }, fill),
				el('span', { class: 'score', text: pct(p.score) }));
		}));
	}

	const PHASES = [
		['preprocess', 'Preprocess', 'k-pre'],
		['queue', 'Queue', 'k-queue'],
		['infer', 'Inference', 'k-infer'],
	];

	function renderTiming(t, rtt) {
		const total = num(t.total) ? t.total : 0;
		const stack = el('div', { class: 'stack', role: 'img', 'aria-label': 'Server time by phase' });
		let known = 0;
		for (const [key, name, cls] of PHASES) {
			if (!num(t[key]) || total <= 0) continue;
			known += t[key];
			const seg = el('span', { class: cls, title: `${name}: ${ms(t[key])}` });
			seg.style.flexGrow = String(t[key]);
			stack.append(seg);
		}
		if (total > known) {
			const seg = el('span', { class: 'k-other', title: `Other (decode of the request, encoding): ${ms(total - known)}` });
			seg.style.flexGrow = String(total - known);
			stack.append(seg);
		}
		const item = (name, value, cls, extra) => el('div', extra ? { class: extra } : {},
			el('dt', {}, cls ? el('i', { class: cls, 'aria-hidden': 'true' }) : null, name),
			el('dd', { text: value }));
		ui.timing.replaceChildren(
			el('h3', { text: 'Latency' }),
			stack,
			el('dl', { class: 'times' },
				...PHASES.map(([key, name, cls]) => item(name, ms(t[key]), cls)),
				item('Server total', ms(t.total), 'k-other'),
				item('Round trip (browser)', ms(rtt), null, 'rtt')));
	}

	// ---- model card ----

	function renderCard(m) {
		const c = m.card;
		ui.confusion.replaceChildren();
		ui.charts.replaceChildren();
		if (!c || typeof c !== 'object') {
			ui.card.hidden = true;
			return;
		}
		ui.card.hidden = false;
		const facts = [];
		const fact = (k, v) => { if (v !== undefined && v !== null && v !== '') facts.push(el('dt', { text: k }), el('dd', { text: String(v) })); };
		const ds = c.dataset;
		if (ds && typeof ds === 'object') {
			fact('Dataset', ds.name);
			const split = ['train', 'validation', 'test'].filter((k) => num(ds[k])).map((k) => `${int(ds[k])} ${k}`);
			if (split.length) fact('Images', split.join(' · '));
		} else {
			fact('Dataset', ds);
		}
		fact('Epochs', c.epochs);
		if (num(c.parameters)) fact('Parameters', int(c.parameters));
		if (c.hyperparameters && typeof c.hyperparameters === 'object') fact('Architecture', c.hyperparameters.arch);
		if (c.created) fact('Trained', String(c.created).replace('T', ' ').replace('Z', ' UTC'));
		if (num(c.wall_time_seconds)) fact('Training time', `${(c.wall_time_seconds / 60).toFixed(1)} min`);
		ui.facts.replaceChildren(...facts);

		const acc = c.accuracy && typeof c.accuracy === 'object' ? c.accuracy : {};
		const rows = ['train', 'validation', 'test'].filter((k) => num(acc[k])).map((k) => {
			const fill = el('span', { class: 'fill' });
			fill.style.width = Math.max(0, Math.min(100, acc[k] * 100)) + '%';
			return el('tr', {},
				el('th', { scope: 'row', text: k[0].toUpperCase() + k.slice(1) }),
				el('td', {}, el('span', { class: 'bar', 'aria-hidden': 'true' }, fill)),
				el('td', { class: 'num', text: pct(acc[k]) }));
		});
		ui.accuracy.replaceChildren(rows.length ? el('table', { class: 'acc' }, el('tbody', {}, ...rows)) : el('p', { class: 'empty', text: 'Not recorded.' }));

		ui.notes.hidden = !c.notes;
		ui.notes.textContent = c.notes ? String(c.notes) : '';

		const cm = c.confusion_matrix;
		if (Array.isArray(cm) && cm.length && cm.every(Array.isArray)) {
			ui.confusion.append(confusionTable(cm, Array.isArray(c.classes) ? c.classes : [], ds));
		} else {
			ui.confusion.append(el('p', { class: 'empty', text: 'The card has no confusion matrix.' }));
		}

		const charts = [];
		if (Array.isArray(c.loss_curve) && c.loss_curve.some(num)) {
			charts.push(lineChart(c.loss_curve, { title: 'Training loss by epoch', cls: 'loss', fmt: (v) => v.toFixed(2) }));
		}
		if (Array.isArray(c.validation_curve) && c.validation_curve.some(num)) {
			charts.push(lineChart(c.validation_curve, { title: 'Validation accuracy by epoch', cls: 'val', fmt: (v) => (v * 100).toFixed(1) + '%' }));
		}
		ui.curves.hidden = charts.length === 0;
		ui.charts.replaceChildren(...charts);
	}

	// heat is a cell's colour: blue on the diagonal (right answers), red off
	// it (confusions), darker as the cell's share of its true class grows.
	// The square root keeps a few percent of confusions visible.
	function heat(share, diagonal) {
		if (share <= 0) return { bg: '#f3f5f9', fg: '#9aa6b7' };
		const t = Math.sqrt(Math.max(0, Math.min(1, share)));
		const light = 97 - t * (diagonal ? 61 : 52);
		return {
			bg: diagonal ? `hsl(216 75% ${light}%)` : `hsl(8 80% ${light}%)`,
			fg: light < 58 ? '#fff' : '#16202e',
		};
	}

	function confusionTable(cm, classes, ds) {
		const n = cm.length;
		const cols = Math.max(...cm.map((r) => r.length));
		const name = (i) => (classes[i] !== undefined && classes[i] !== '' ? String(classes[i]) : `class ${i}`);
		const head = el('tr', {}, el('th', { class: 'corner', scope: 'col', text: 'true ↓  predicted →' }));
		for (let j = 0; j < cols; j++) head.append(el('th', { scope: 'col', 'data-class': j, text: name(j) }));
		head.append(el('th', { scope: 'col', class: 'recall', text: 'recall' }));
		const body = el('tbody', {});
		for (let i = 0; i < n; i++) {
			const row = cm[i];
			const sum = row.reduce((a, v) => a + (num(v) ? v : 0), 0);
			const tr = el('tr', {}, el('th', { scope: 'row', 'data-class': i, text: name(i) }));
			for (let j = 0; j < cols; j++) {
				const v = num(row[j]) ? row[j] : 0;
				const share = sum > 0 ? v / sum : 0;
				const c = heat(share, i === j);
				const td = el('td', {
					text: int(v),
					title: `true ${name(i)}, predicted ${name(j)}: ${int(v)} of ${int(sum)} (${pct(share)})`,
				});
				td.style.backgroundColor = c.bg;
				td.style.color = c.fg;
				tr.append(td);
			}
			tr.append(el('td', { class: 'recall', text: sum > 0 ? pct((num(row[i]) ? row[i] : 0) / sum) : '–' }));
			body.append(tr);
		}
		const total = cm.reduce((a, r) => a + r.reduce((b, v) => b + (num(v) ? v : 0), 0), 0);
		const split = ds && typeof ds === 'object' && num(ds.test) && ds.test === total ? 'test set' : 'evaluation set';
		const wrap = el('div', {},
			el('table', { class: 'heat' },
				el('caption', { text: `Rows: true class; columns: predicted class. Counts on the ${split} (${int(total)} images).` }),
				el('thead', {}, head), body),
			el('div', { class: 'legend', 'aria-hidden': 'true' },
				el('span', {}, el('span', { class: 'swatch right' }), 'right, by share of the true class'),
				el('span', {}, el('span', { class: 'swatch wrong' }), 'confused with')));
		return wrap;
	}

	// markPrediction outlines the predicted class's column in the confusion
	// matrix: how often the model confuses it, at a glance.
	function markPrediction(p) {
		for (const th of ui.confusion.querySelectorAll('.hit')) th.classList.remove('hit');
		if (!p || !num(p.index)) return;
		const th = ui.confusion.querySelector(`thead th[data-class="${p.index}"]`);
		if (th) th.classList.add('hit');
	}

	// niceTicks spans [lo, hi] with 3 to 6 round values: steps of 1, 2 or 5
	// times a power of ten.
	function niceTicks(lo, hi) {
		if (hi - lo < 1e-12) { const d = Math.abs(hi) * 0.05 || 1; lo -= d; hi += d; }
		const raw = (hi - lo) / 4;
		const mag = 10 ** Math.floor(Math.log10(raw));
		const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => (hi - lo) / s <= 5);
		const out = [];
		for (let v = Math.floor(lo / step) * step; v < hi + step * 0.999; v += step) {
			out.push(Number(v.toPrecision(12)));
		}
		return out.length > 1 ? out : [lo, hi];
	}

	// lineChart draws values (one per epoch) as an inline SVG line chart.
	function lineChart(values, { title, cls, fmt }) {
		const W = 480, H = 180, L = 50, R = 14, T = 10, B = 34;
		const pts = values.map((v, i) => [i + 1, v]).filter(([, v]) => num(v));
		const ticks = niceTicks(Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1])));
		const lo = ticks[0], hi = ticks[ticks.length - 1];
		const n = values.length;
		const x = (e) => (n <= 1 ? L + (W - L - R) / 2 : L + ((e - 1) / (n - 1)) * (W - L - R));
		const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
		const first = pts[0][1], last = pts[pts.length - 1][1];
		const g = svg('svg', {
			class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img',
			'aria-label': `${title}: ${fmt(first)} after epoch ${pts[0][0]}, ${fmt(last)} after epoch ${pts[pts.length - 1][0]}`,
		}, svg('title', { text: title }));
		for (const v of ticks) {
			g.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }),
				svg('text', { x: L - 6, y: y(v) + 3.5, 'text-anchor': 'end', text: fmt(v) }));
		}
		const step = Math.max(1, Math.ceil(n / 10));
		for (let e = 1; e <= n; e += step) {
			g.append(svg('text', { x: x(e), y: H - B + 14, 'text-anchor': 'middle', text: String(e) }));
		}
		g.append(svg('text', { x: L + (W - L - R) / 2, y: H - 4, 'text-anchor': 'middle', text: 'epoch' }),
			svg('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }),
			svg('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }),
			svg('polyline', { class: `line ${cls}`, points: pts.map(([e, v]) => `${x(e).toFixed(1)},${y(v).toFixed(1)}`).join(' ') }));
		for (const [e, v] of pts) {
			g.append(svg('circle', { class: cls, cx: x(e).toFixed(1), cy: y(v).toFixed(1), r: 2.8 },
				svg('title', { text: `epoch ${e}: ${fmt(v)}` })));
		}
		return el('figure', {}, el('figcaption', { text: title }), g);
	}

	// ---- server ----

	async function loadServerInfo() {
		try {
			const s = await api('/v2');
			ui.serverInfo.textContent = [s.name, s.version, s.runtime].filter(Boolean).join(' ');
		} catch (_) {
			// the footer keeps its plain name
		}
	}

	loadModels();
	loadServerInfo();
})();
