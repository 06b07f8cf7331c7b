import { Controller, Get, Header } from '@nestjs/common';
import { Public } from '../common/http.js';

/**
 * A first dashboard: sign in with an API key, see machines and deployments with their steps and targets, refreshed
 * every two seconds. It uses only the REST API, like every other client.
 */
@Controller()
export class DashboardController {
  @Public()
  @Get()
  @Header('content-type', 'text/html; charset=utf-8')
  @Header('cache-control', 'no-store')
  index() {
    return PAGE;
  }
}

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Cuttle</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
 header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:16px;align-items:center}
 header h1{font-size:18px;margin:0} main{padding:16px 20px;display:grid;gap:16px}
 section{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 2px #0002}
 table{border-collapse:collapse;width:100%} td,th{padding:4px 8px;border-bottom:1px solid #eee;text-align:left}
 .s-success{color:#137333}.s-failed{color:#c5221f}.s-running,.s-executing{color:#1a73e8}.s-pending,.s-queued{color:#777}
 .s-skipped,.s-cancelled{color:#a66}.cell{display:inline-block;padding:2px 6px;margin:2px;border-radius:4px;background:#eef}
 pre{background:#111;color:#ddd;padding:8px;max-height:300px;overflow:auto;font-size:12px}
 input{padding:4px}
</style></head>
<body><header><h1>Cuttle</h1><span id="who"></span></header>
<main>
<section id="login"><label>API key <input id="key" type="password" size="48"></label> <button id="signin">Sign in</button>
<p>The admin key is printed by <code>npm run demo</code> and kept in <code>$CUTTLE_HOME/admin-api-key</code>.</p></section>
<section><h2>Machines</h2><table id="machines"></table></section>
<section><h2>Deployments</h2><div id="deployments"></div></section>
<section><h2>Log</h2><pre id="log">select a deployment</pre></section>
</main>
<script>
const keyInput=document.getElementById('key');keyInput.value=localStorage.getItem('cuttleKey')||'';
document.getElementById('signin').onclick=()=>{localStorage.setItem('cuttleKey',keyInput.value);refresh();};
let selected=null;
async function api(p){const r=await fetch(p,{headers:{'X-Api-Key':localStorage.getItem('cuttleKey')||''}});if(r.status===401)throw new Error('sign in');return r.json();}
const esc=s=>String(s??'').replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
async function refresh(){
 try{
  const ms=await api('/api/machines');
  document.getElementById('who').textContent='signed in';document.getElementById('login').style.display='none';
  document.getElementById('machines').innerHTML='<tr><th>name</th><th>status</th><th>roles</th><th>last seen</th><th>agent</th></tr>'+ms.map(m=>'<tr><td>'+esc(m.name)+'</td><td class="s-'+(m.status==='online'?'success':'failed')+'">'+m.status+'</td><td>'+esc(m.roles.join(', '))+'</td><td>'+esc(m.lastSeenAt)+'</td><td>'+esc(m.agentVersion)+'</td></tr>').join('');
  const ds=await api('/api/deployments?limit=10');
  const full=await Promise.all(ds.map(d=>api('/api/deployments/'+d.id)));
  document.getElementById('deployments').innerHTML=full.map(d=>'<div><a href="#" data-id="'+d.id+'">'+esc(d.releaseVersion)+'</a> <b class="s-'+d.state+'">'+d.state+'</b> '+esc(d.createdAt)+
   d.steps.map(s=>'<div>&nbsp;&nbsp;'+esc(s.name)+' <span class="s-'+s.state+'">'+s.state+'</span> (window '+s.windowSize+') '+s.targets.map(t=>'<span class="cell s-'+t.state+'">'+esc(t.machineName)+': '+t.state+'</span>').join('')+'</div>').join('')+'</div>').join('<hr>');
  document.querySelectorAll('[data-id]').forEach(a=>a.onclick=e=>{e.preventDefault();selected=a.dataset.id;refresh();});
  if(selected){const l=await api('/api/deployments/'+selected+'/log?limit=10000');document.getElementById('log').textContent=l.entries.map(e=>e.seq+' '+e.at.slice(11,23)+' '+e.level.padEnd(5)+' '+e.text).join('\\n');}
 }catch(e){document.getElementById('login').style.display='';}
}
refresh();setInterval(refresh,2000);
</script></body></html>`;
