/* Verify a settlement entry in the browser, trusting nothing the server says about the chain.
 *
 * Inputs (a form the server pre-fills, all editable): the entry (period, entry id, owner, amount), its
 * Merkle proof, a JSON-RPC URL and the settlement contract's address. From the chain, at one block B:
 *   - eth_chainId (the leaf commits to it), the block's number and hash, the contract's code;
 *   - the PeriodProposed log of the period (its root, totals and entry count);
 *   - periodState(period), isClaimed(period, entry) and the contract's own leaf(...) (eth_call).
 * In the browser: the leaf with @openzeppelin/merkle-tree's standardLeafHash over
 * (chainId, contract, periodId, entryId, owner, amount), the root from the proof with processProof, and
 * StandardMerkleTree.verify against the root read from the chain.
 */
(function () {
  "use strict";
  const STATES = ["None", "Proposed", "Disputed", "Finalised"];
  const MAX_LOG_BLOCKS = 5000;

  const form = document.getElementById("verify-form");
  const out = document.getElementById("verify-result");
  if (!form || !out) return;

  function rpcClient(url) {
    let id = 0;
    return async function rpc(method, params) {
      const response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: ++id, method: method, params: params }),
        credentials: "omit",
        cache: "no-store",
      });
      if (!response.ok) throw new Error(method + ": HTTP " + response.status + " from " + url);
      const body = await response.json();
      if (body.error) throw new Error(method + ": " + body.error.message);
      return body.result;
    };
  }

  function text(tag, content, cls) {
    const el = document.createElement(tag);
    el.textContent = content;
    if (cls) el.className = cls;
    return el;
  }

  function report(outcome, headline, checks, facts) {
    out.replaceChildren();
    out.dataset.outcome = outcome;
    const h = text("p", (outcome === "verified" ? "✔ " : "✖ ") + headline, "headline " + outcome);
    h.setAttribute("data-testid", "verify-headline");
    out.append(h);
    if (checks.length) {
      const list = document.createElement("ul");
      list.className = "checks";
      for (const c of checks) {
        const li = text("li", (c.ok ? "✔ " : "✖ ") + c.text, c.ok ? "ok" : "bad");
        li.dataset.ok = String(c.ok);
        list.append(li);
      }
      out.append(list);
    }
    if (facts.length) {
      const dl = document.createElement("dl");
      dl.className = "facts";
      for (const [k, v] of facts) {
        const div = document.createElement("div");
        div.append(text("dt", k), text("dd", v));
        dl.append(div);
      }
      out.append(dl);
    }
  }

  function parseInputs() {
    const f = new FormData(form);
    const problems = [];
    const get = (k) => String(f.get(k) || "").trim();
    const intOf = (k) => {
      const v = get(k);
      if (!/^[0-9]+$/.test(v)) problems.push(k + " is not a whole number");
      return /^[0-9]+$/.test(v) ? BigInt(v) : 0n;
    };
    const period = intOf("period");
    const entry = intOf("entry");
    const amountText = get("amount");
    if (!/^-?[0-9]+$/.test(amountText)) problems.push("amount is not a whole number of base units");
    const amount = /^-?[0-9]+$/.test(amountText) ? BigInt(amountText) : 0n;
    const owner = get("owner");
    if (!ethers.isAddress(owner)) problems.push("owner is not an address");
    const contract = get("contract");
    if (!ethers.isAddress(contract)) problems.push("contract is not an address");
    const proof = get("proof").split(/\s+/).filter(Boolean);
    proof.forEach((p, i) => {
      if (!/^0x[0-9a-fA-F]{64}$/.test(p)) problems.push("proof line " + (i + 1) + " is not a 32-byte hash");
    });
    const blockText = get("block");
    const hint = /^[0-9]+$/.test(blockText) ? Number(blockText) : null;
    let rpc = get("rpc");
    try {
      rpc = new URL(rpc, window.location.href).href;
    } catch (e) {
      problems.push("the JSON-RPC URL is not a URL");
    }
    return { problems, period, entry, amount, owner, contract, proof, hint, rpc };
  }

  /* The node an owner chose is remembered in this browser (never sent to this server) and used again. */
  const REMEMBERED = "v2g.verify.rpc";
  function remember(url) {
    try {
      const chosen = new URL(form.elements.rpc.defaultValue, window.location.href).href;
      if (url !== chosen) window.localStorage.setItem(REMEMBERED, url);
      else window.localStorage.removeItem(REMEMBERED);
    } catch (e) { /* storage refused: nothing remembered */ }
  }
  function recall() {
    let url = null;
    try { url = window.localStorage.getItem(REMEMBERED); } catch (e) { return; }
    const field = form.elements.rpc;
    if (url && field.value === field.defaultValue) {
      field.value = url;
      const note = document.createElement("p");
      note.className = "note";
      note.id = "rpc-remembered";
      note.textContent = "The JSON-RPC URL is the node you chose last time in this browser; put back " + field.defaultValue + " to check through the server's default.";
      field.closest("label").after(note);
    }
  }

  async function verify() {
    const input = parseInputs();
    if (input.problems.length) {
      report("failed", "Not verified: the entry cannot be checked as entered", input.problems.map((t) => ({ ok: false, text: t })), []);
      return;
    }
    out.dataset.outcome = "running";
    out.replaceChildren(text("p", "Reading the chain at " + input.rpc + " …"));
    const rpc = rpcClient(input.rpc);
    const checks = [];
    const facts = [];
    const types = JSON.parse(form.dataset.leafTypes);
    const expectedChain = form.dataset.expectedChain;
    const iface = new ethers.Interface([
      "function periodState(uint64 periodId) view returns (uint8)",
      "function isClaimed(uint64 periodId, uint256 entryId) view returns (bool)",
      "function leaf(uint64 periodId, uint256 entryId, address owner, int256 amount) view returns (bytes32)",
      "event PeriodProposed(uint64 indexed periodId, bytes32 root, uint96 totalCredit, uint96 totalDebit, uint32 entryCount, uint64 challengeEnds)",
    ]);
    const coder = ethers.AbiCoder.defaultAbiCoder();
    try {
      // 1. which chain, and one block to read everything at
      const chainId = BigInt(await rpc("eth_chainId", []));
      facts.push(["Chain id (from the node)", chainId.toString()]);
      if (expectedChain && BigInt(expectedChain) !== chainId) {
        checks.push({ ok: false, text: "the node is on chain id " + chainId + ", the deployment record says " + expectedChain });
      }
      const block = await rpc("eth_getBlockByNumber", ["latest", false]);
      const blockNumber = Number(BigInt(block.number));
      const at = ethers.toQuantity(blockNumber);
      facts.push(["Read at block", blockNumber + " (" + block.hash + ")"]);
      // 2. the contract exists there
      const code = await rpc("eth_getCode", [input.contract, at]);
      const hasCode = code && code !== "0x";
      checks.push({ ok: hasCode, text: hasCode ? "contract code found at " + input.contract : "no contract code at " + input.contract + " on this chain" });
      if (!hasCode) throw new Error("stop");
      // 3. the period's committed root, from its PeriodProposed log
      const topic0 = iface.getEvent("PeriodProposed").topicHash;
      const topic1 = ethers.zeroPadValue(ethers.toBeHex(input.period), 32);
      let from = input.hint !== null && input.hint <= blockNumber ? input.hint : Math.max(0, blockNumber - MAX_LOG_BLOCKS + 1);
      let to = input.hint !== null && input.hint <= blockNumber ? input.hint : blockNumber;
      const logs = await rpc("eth_getLogs", [{ address: input.contract, topics: [topic0, topic1], fromBlock: ethers.toQuantity(from), toBlock: ethers.toQuantity(to) }]);
      if (!logs.length) {
        checks.push({ ok: false, text: "no PeriodProposed log for period " + input.period + " in blocks " + from + " to " + to + ": the period is not proposed there" });
        throw new Error("stop");
      }
      const log = logs[0];
      let root, totals;
      if (log.topics.length === 3) {
        root = log.topics[2];  // an older deployment indexed the root
        totals = coder.decode(["uint96", "uint96", "uint32", "uint64"], log.data);
      } else {
        const d = coder.decode(["bytes32", "uint96", "uint96", "uint32", "uint64"], log.data);
        root = d[0];
        totals = d.slice(1);
      }
      const entryCount = BigInt(totals[2]);
      facts.push(["Committed root (from the chain)", root]);
      facts.push(["Proposed in", "block " + BigInt(log.blockNumber) + ", transaction " + log.transactionHash]);
      facts.push(["Period totals (from the chain)", "credit " + totals[0] + ", debit " + totals[1] + " base units, " + entryCount + " entries"]);
      checks.push({ ok: input.entry < entryCount, text: "entry id " + input.entry + (input.entry < entryCount ? " is within" : " is NOT within") + " the period's " + entryCount + " entries" });
      // 4. the leaf and root, recomputed here
      const value = [chainId, input.contract, input.period, input.entry, input.owner, input.amount];
      const leaf = OZMerkleTree.standardLeafHash(types, value);
      const computed = OZMerkleTree.processProof(leaf, input.proof);
      facts.push(["Leaf (computed in this browser)", leaf]);
      facts.push(["Root from the proof (computed in this browser)", computed]);
      const rootOk = computed.toLowerCase() === String(root).toLowerCase();
      checks.push({ ok: rootOk, text: rootOk ? "the proof leads from this entry's leaf to the committed root" : "the root computed from the entry and proof (" + computed + ") is not the committed root (" + root + ")" });
      const libraryOk = OZMerkleTree.StandardMerkleTree.verify(root, types, value, input.proof);
      checks.push({ ok: libraryOk, text: "StandardMerkleTree.verify(committed root, entry, proof) is " + libraryOk });
      // 5. the contract computes the same leaf (so its claim check is the one verified here)
      try {
        const data = iface.encodeFunctionData("leaf", [input.period, input.entry, input.owner, input.amount]);
        const contractLeaf = iface.decodeFunctionResult("leaf", await rpc("eth_call", [{ to: input.contract, data: data }, at]))[0];
        const same = contractLeaf.toLowerCase() === leaf.toLowerCase();
        checks.push({ ok: same, text: same ? "the contract's leaf() gives the same leaf" : "the contract's leaf() gives " + contractLeaf + ", not " + leaf });
      } catch (e) {
        checks.push({ ok: false, text: "the contract's leaf() refused this entry: " + e.message });
      }
      // 6. state and claim, as the contract holds them
      const state = Number(iface.decodeFunctionResult("periodState", await rpc("eth_call", [{ to: input.contract, data: iface.encodeFunctionData("periodState", [input.period]) }, at]))[0]);
      const claimed = iface.decodeFunctionResult("isClaimed", await rpc("eth_call", [{ to: input.contract, data: iface.encodeFunctionData("isClaimed", [input.period, input.entry]) }, at]))[0];
      facts.push(["Period state (from the contract)", STATES[state] || String(state)]);
      facts.push(["Entry claimed (from the contract)", claimed ? "yes" : "no"]);
      if (state === 2) checks.push({ ok: false, text: "the period was disputed on chain: its entries are not paid" });
      const ok = checks.every((c) => c.ok);
      facts.push(["Node that answered", input.rpc]);
      const where = "chain id " + chainId + ", contract " + input.contract + ", block " + blockNumber + ", through " + input.rpc;
      remember(input.rpc);
      report(ok ? "verified" : "failed", ok ? "Verified against " + where : "Not verified against " + where, checks, facts);
    } catch (e) {
      if (e.message !== "stop") checks.push({ ok: false, text: "could not read the chain: " + e.message });
      report("failed", "Not verified", checks, facts);
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    verify();
  });
  recall();
  if (form.dataset.autorun === "true") verify();
})();
