"use strict";(self.rspackChunk_jupyter_mig_labextension=self.rspackChunk_jupyter_mig_labextension||[]).push([[232],{536(r,o,e){var i=e(126),t=e.n(i),p=e(719),a=(e.n(p))()(t());a.push([r.id,`/* jupyter-mig: status bar item, request dialog, restart progress, cluster panel.
   Colours come from JupyterLab's theme variables so light and dark themes both work. */

:root {
  --jp-mig-in-use: var(--jp-brand-color1);
  --jp-mig-free: var(--jp-success-color1);
  --jp-mig-creating: var(--jp-warn-color1);
  --jp-mig-uncarved: var(--jp-layout-color2);
}

/* Status bar */
.jp-mig-StatusItem {
  cursor: pointer;
  padding: 0 6px;
  white-space: nowrap;
  line-height: 24px;
  font-size: var(--jp-ui-font-size1);
  color: var(--jp-ui-font-color1);
}

.jp-mig-StatusItem.jp-mig-mod-gpu::before {
  content: '';
  display: inline-block;
  width: 8px;
  height: 8px;
  margin-right: 5px;
  border-radius: 2px;
  background: var(--jp-mig-in-use);
  vertical-align: 0;
}

.jp-mig-StatusItem.jp-mig-mod-error {
  color: var(--jp-ui-font-color2);
}

/* Request dialog */
.jp-mig-RequestBody {
  min-width: 420px;
  max-width: 560px;
}

.jp-mig-Explain,
.jp-mig-Current {
  margin: 0 0 8px;
  color: var(--jp-ui-font-color1);
}

.jp-mig-Current {
  font-weight: 600;
}

.jp-mig-Options {
  display: flex;
  flex-direction: column;
  gap: 2px;
  max-height: 320px;
  overflow-y: auto;
  border: var(--jp-border-width) solid var(--jp-border-color2);
  border-radius: 4px;
  padding: 4px;
}

.jp-mig-Option {
  display: grid;
  grid-template-columns: auto 6em 1fr auto;
  align-items: center;
  gap: 8px;
  padding: 4px 6px;
  border-radius: 3px;
  cursor: pointer;
}

.jp-mig-Option:hover {
  background: var(--jp-layout-color2);
}

.jp-mig-Option:has(input:disabled) {
  cursor: default;
  opacity: 0.55;
}

.jp-mig-OptionName {
  font-family: var(--jp-code-font-family);
  font-weight: 600;
}

.jp-mig-OptionProfile {
  color: var(--jp-ui-font-color2);
  font-size: var(--jp-ui-font-size0);
  overflow: hidden;
  text-overflow: ellipsis;
  white-space: nowrap;
}

.jp-mig-Availability {
  font-size: var(--jp-ui-font-size0);
  padding: 1px 6px;
  border-radius: 8px;
  white-space: nowrap;
  background: var(--jp-layout-color3);
}

.jp-mig-Option.jp-mig-mod-free .jp-mig-Availability {
  background: var(--jp-mig-free);
  color: white;
}

.jp-mig-Option.jp-mig-mod-repartition .jp-mig-Availability {
  background: var(--jp-mig-creating);
  color: white;
}

.jp-mig-OtherSize {
  grid-column: 3 / span 2;
  width: 12em;
}

.jp-mig-Error {
  color: var(--jp-error-color1);
}

.jp-mig-Note {
  color: var(--jp-ui-font-color2);
}

/* Restart progress */
.jp-mig-Progress {
  min-width: 360px;
}

.jp-mig-Steps {
  list-style: none;
  padding: 0;
  margin: 8px 0;
}

.jp-mig-Step {
  display: flex;
  align-items: center;
  gap: 8px;
  padding: 3px 0;
  color: var(--jp-ui-font-color2);
}

.jp-mig-Mark {
  display: inline-flex;
  justify-content: center;
  align-items: center;
  width: 18px;
  height: 18px;
  border-radius: 50%;
  border: 1px solid var(--jp-border-color1);
  font-size: 11px;
}

.jp-mig-Step.jp-mig-mod-done {
  color: var(--jp-ui-font-color1);
}

.jp-mig-Step.jp-mig-mod-done .jp-mig-Mark {
  background: var(--jp-mig-free);
  border-color: var(--jp-mig-free);
  color: white;
}

.jp-mig-Step.jp-mig-mod-current {
  color: var(--jp-ui-font-color0);
  font-weight: 600;
}

.jp-mig-Step.jp-mig-mod-current .jp-mig-Mark {
  border-color: var(--jp-brand-color1);
  color: var(--jp-brand-color1);
}

.jp-mig-Step.jp-mig-mod-failed {
  color: var(--jp-error-color1);
}

.jp-mig-Step.jp-mig-mod-failed .jp-mig-Mark {
  background: var(--jp-error-color1);
  border-color: var(--jp-error-color1);
  color: white;
}

.jp-mig-Message {
  min-height: 1.5em;
}

/* Cluster panel */
.jp-mig-Panel {
  background: var(--jp-layout-color1);
  color: var(--jp-ui-font-color1);
  font-size: var(--jp-ui-font-size1);
  overflow-y: auto;
  padding: 8px 12px;
  min-width: 300px;
}

.jp-mig-PanelHeader h2 {
  font-size: var(--jp-ui-font-size2);
  margin: 4px 0 8px;
}

.jp-mig-Toolbar {
  display: flex;
  align-items: center;
  gap: 6px;
  flex-wrap: wrap;
}

.jp-mig-Button {
  font-size: var(--jp-ui-font-size1);
  padding: 3px 10px;
  border-radius: 3px;
  border: var(--jp-border-width) solid var(--jp-border-color1);
  background: var(--jp-layout-color2);
  color: var(--jp-ui-font-color1);
  cursor: pointer;
}

.jp-mig-Button.jp-mod-accept {
  background: var(--jp-brand-color1);
  border-color: var(--jp-brand-color1);
  color: white;
}

.jp-mig-Updated {
  color: var(--jp-ui-font-color2);
  font-size: var(--jp-ui-font-size0);
}

.jp-mig-Legend {
  display: flex;
  flex-wrap: wrap;
  gap: 4px 12px;
  margin: 10px 0 4px;
  font-size: var(--jp-ui-font-size0);
  color: var(--jp-ui-font-color2);
}

.jp-mig-LegendItem {
  display: inline-flex;
  align-items: center;
  gap: 4px;
}

.jp-mig-Swatch {
  display: inline-block;
  width: 14px;
  height: 10px;
  border-radius: 2px;
}

.jp-mig-Node {
  margin: 10px 0 4px;
  padding: 6px 8px 8px;
  border: var(--jp-border-width) solid var(--jp-border-color2);
  border-radius: 4px;
}

.jp-mig-Node h3,
.jp-mig-Sizes h3 {
  font-size: var(--jp-ui-font-size1);
  margin: 0 0 6px;
  font-weight: 600;
}

.jp-mig-Gpu + .jp-mig-Gpu {
  margin-top: 8px;
}

.jp-mig-GpuTitle {
  display: flex;
  flex-wrap: wrap;
  gap: 0 8px;
  align-items: baseline;
  margin-bottom: 2px;
}

.jp-mig-GpuName,
.jp-mig-GpuModel {
  white-space: nowrap;
}

.jp-mig-GpuName {
  font-weight: 600;
}

.jp-mig-GpuModel {
  font-family: var(--jp-code-font-family);
  font-size: var(--jp-ui-font-size0);
}

.jp-mig-GpuCounts {
  flex: 1;
  text-align: right;
  white-space: nowrap;
  color: var(--jp-ui-font-color2);
  font-size: var(--jp-ui-font-size0);
}

.jp-mig-Grid {
  display: grid;
  grid-template-rows: auto 36px;
  gap: 2px;
}

.jp-mig-Tick {
  text-align: center;
  font-size: 9px;
  color: var(--jp-ui-font-color3);
}

.jp-mig-Block {
  display: flex;
  align-items: center;
  justify-content: center;
  min-width: 0;
  overflow: hidden;
  border-radius: 3px;
  font-family: var(--jp-code-font-family);
  font-size: 10px;
  color: white;
  white-space: nowrap;
}

.jp-mig-Block.jp-mig-mod-in_use,
.jp-mig-Swatch.jp-mig-mod-in_use {
  background: var(--jp-mig-in-use);
}

.jp-mig-Block.jp-mig-mod-free,
.jp-mig-Swatch.jp-mig-mod-free {
  background: var(--jp-mig-free);
}

.jp-mig-Block.jp-mig-mod-creating,
.jp-mig-Swatch.jp-mig-mod-creating {
  background: repeating-linear-gradient(
    135deg,
    var(--jp-mig-creating) 0 6px,
    color-mix(in srgb, var(--jp-mig-creating) 70%, white) 6px 12px
  );
}

.jp-mig-Block.jp-mig-mod-uncarved,
.jp-mig-Swatch.jp-mig-mod-uncarved {
  background: var(--jp-mig-uncarved);
  border: 1px dashed var(--jp-border-color1);
  box-sizing: border-box;
}

.jp-mig-Block.jp-mig-mod-uncarved {
  color: var(--jp-ui-font-color3);
}

.jp-mig-Sizes {
  margin-top: 14px;
}

.jp-mig-Sizes table {
  width: 100%;
  border-collapse: collapse;
}

.jp-mig-Sizes th,
.jp-mig-Sizes td {
  text-align: left;
  padding: 2px 4px;
  border-bottom: var(--jp-border-width) solid var(--jp-border-color3);
}

.jp-mig-Sizes td:first-child {
  font-family: var(--jp-code-font-family);
}

.jp-mig-Sizes tr.jp-mig-mod-unavailable td {
  color: var(--jp-ui-font-color3);
}

/* Radio buttons drawn here: inside dialogs the theme's form styling leaves them square. */
.jp-mig-Option input[type='radio'] {
  appearance: none;
  -webkit-appearance: none;
  display: inline-grid;
  place-content: center;
  width: 15px;
  height: 15px;
  margin: 0;
  padding: 0;
  border: 1.5px solid var(--jp-border-color1);
  border-radius: 50%;
  background: var(--jp-layout-color0);
  box-shadow: none;
}

.jp-mig-Option input[type='radio']::before {
  content: '';
  width: 7px;
  height: 7px;
  border-radius: 50%;
  background: var(--jp-brand-color1);
  transform: scale(0);
}

.jp-mig-Option input[type='radio']:checked {
  border-color: var(--jp-brand-color1);
}

.jp-mig-Option input[type='radio']:checked::before {
  transform: scale(1);
}

.jp-mig-Option:has(input:checked) {
  background: var(--jp-layout-color2);
  box-shadow: inset 3px 0 0 var(--jp-brand-color1);
}

/* A slice request in a notebook output (the %gpu_slice magic, the GpuSlicePicker widget). */
.jp-mig-SliceRequest {
  padding: 6px 0;
  font-size: var(--jp-content-font-size1);
}

.jp-mig-SliceRequest-summary {
  margin: 0 0 6px;
  font-weight: 600;
}

.jp-mig-SliceRequest-buttons {
  margin-bottom: 6px;
}

.jp-mig-SliceRequest-confirm[hidden] {
  display: none;
}

.jp-mig-SliceRequest-message {
  margin: 0;
  color: var(--jp-ui-font-color2);
}

.jp-mig-SliceRequest-message.jp-mig-Error {
  color: var(--jp-error-color1);
}
`,""]),e.d(o,{},{A:a})},719(r){r.exports=function(r){var o=[];return o.toString=function(){return this.map(function(o){var e="",i=void 0!==o[5];return o[4]&&(e+="@supports (".concat(o[4],") {")),o[2]&&(e+="@media ".concat(o[2]," {")),i&&(e+="@layer".concat(o[5].length>0?" ".concat(o[5]):""," {")),e+=r(o),i&&(e+="}"),o[2]&&(e+="}"),o[4]&&(e+="}"),e}).join("")},o.i=function(r,e,i,t,p){"string"==typeof r&&(r=[[null,r,void 0]]);var a={};if(i)for(var n=0;n<this.length;n++){var c=this[n][0];null!=c&&(a[c]=!0)}for(var l=0;l<r.length;l++){var d=[].concat(r[l]);i&&a[d[0]]||(void 0!==p&&(void 0===d[5]||(d[1]="@layer".concat(d[5].length>0?" ".concat(d[5]):""," {").concat(d[1],"}")),d[5]=p),e&&(d[2]&&(d[1]="@media ".concat(d[2]," {").concat(d[1],"}")),d[2]=e),t&&(d[4]?(d[1]="@supports (".concat(d[4],") {").concat(d[1],"}"),d[4]=t):d[4]="".concat(t)),o.push(d))}},o}},126(r){r.exports=function(r){return r[1]}},559(r){var o=[];function e(r){for(var e=-1,i=0;i<o.length;i++)if(o[i].identifier===r){e=i;break}return e}function i(r,i){for(var t={},p=[],a=0;a<r.length;a++){var n=r[a],c=i.base?n[0]+i.base:n[0],l=t[c]||0,d="".concat(c," ").concat(l);t[c]=l+1;var s=e(d),g={css:n[1],media:n[2],sourceMap:n[3],supports:n[4],layer:n[5]};if(-1!==s)o[s].references++,o[s].updater(g);else{var m=function(r,o){var e=o.domAPI(o);return e.update(r),function(o){o?(o.css!==r.css||o.media!==r.media||o.sourceMap!==r.sourceMap||o.supports!==r.supports||o.layer!==r.layer)&&e.update(r=o):e.remove()}}(g,i);i.byIndex=a,o.splice(a,0,{identifier:d,updater:m,references:1})}p.push(d)}return p}r.exports=function(r,t){var p=i(r=r||[],t=t||{});return function(r){r=r||[];for(var a=0;a<p.length;a++){var n=e(p[a]);o[n].references--}for(var c=i(r,t),l=0;l<p.length;l++){var d=e(p[l]);0===o[d].references&&(o[d].updater(),o.splice(d,1))}p=c}}},672(r){var o={};r.exports=function(r,e){var i=function(r){if(void 0===o[r]){var e=document.querySelector(r);if(window.HTMLIFrameElement&&e instanceof window.HTMLIFrameElement)try{e=e.contentDocument.head}catch(r){e=null}o[r]=e}return o[r]}(r);if(!i)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");i.appendChild(e)}},691(r){r.exports=function(r){var o=document.createElement("style");return r.setAttributes(o,r.attributes),r.insert(o,r.options),o}},215(r,o,e){r.exports=function(r){var o=e.nc;o&&r.setAttribute("nonce",o)}},204(r){r.exports=function(r){if("u"<typeof document)return{update:function(){},remove:function(){}};var o=r.insertStyleElement(r);return{update:function(e){var i,t,p;i="",e.supports&&(i+="@supports (".concat(e.supports,") {")),e.media&&(i+="@media ".concat(e.media," {")),(t=void 0!==e.layer)&&(i+="@layer".concat(e.layer.length>0?" ".concat(e.layer):""," {")),i+=e.css,t&&(i+="}"),e.media&&(i+="}"),e.supports&&(i+="}"),(p=e.sourceMap)&&"u">typeof btoa&&(i+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(p))))," */")),r.styleTagTransform(i,o,r.options)},remove:function(){var r;null===(r=o).parentNode||r.parentNode.removeChild(r)}}}},696(r){r.exports=function(r,o){if(o.styleSheet)o.styleSheet.cssText=r;else{for(;o.firstChild;)o.removeChild(o.firstChild);o.appendChild(document.createTextNode(r))}}},579(r,o,e){var i=e(559),t=e.n(i),p=e(204),a=e.n(p),n=e(672),c=e.n(n),l=e(215),d=e.n(l),s=e(691),g=e.n(s),m=e(696),u=e.n(m),j=e(536),f={};f.styleTagTransform=u(),f.setAttributes=d(),f.insert=c().bind(null,"head"),f.domAPI=a(),f.insertStyleElement=g(),t()(j.A,f),j.A&&j.A.locals&&j.A.locals}}]);