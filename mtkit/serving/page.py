"""The page at `/`: type a sentence, see its translation (plain HTML and a few lines of JavaScript
that call /translate; no build step)."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mtkit: {{SOURCE}} &rarr; {{TARGET}}</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
  textarea, output { display: block; width: 100%; min-height: 7rem; box-sizing: border-box; padding: .5rem;
                     font: inherit; border: 1px solid #999; border-radius: 4px; white-space: pre-wrap; }
  output { background: #f4f4f4; }
  .row { margin: .75rem 0; display: flex; gap: .75rem; align-items: center; }
  .error { color: #a00; }
</style>
</head>
<body>
<h1>{{SOURCE}} &rarr; {{TARGET}}</h1>
<form id="form">
  <textarea id="q" placeholder="Type {{SOURCE}} text, one sentence per line" autofocus></textarea>
  <div class="row">
    <button type="submit">Translate</button>
    <input id="key" type="password" placeholder="API key" hidden>
    <span id="status"></span>
  </div>
</form>
<output id="out" aria-live="polite"></output>
<script>
const needsKey = {{KEY}};
const key = document.getElementById("key");
key.hidden = !needsKey;
document.getElementById("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = document.getElementById("out"), status = document.getElementById("status");
  status.textContent = "translating...";
  out.classList.remove("error");
  const body = {q: document.getElementById("q").value, source: "{{SOURCE}}", target: "{{TARGET}}"};
  if (needsKey) body.api_key = key.value;
  const started = performance.now();
  try {
    const response = await fetch("translate", {method: "POST", headers: {"Content-Type": "application/json"},
                                               body: JSON.stringify(body)});
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    out.textContent = answer.translatedText;
    status.textContent = Math.round(performance.now() - started) + " ms";
  } catch (error) {
    out.textContent = error.message;
    out.classList.add("error");
    status.textContent = "";
  }
});
</script>
</body>
</html>
"""
