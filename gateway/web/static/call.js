// The family call page: join with the token from the link, send camera and microphone
// to the gateway over WebRTC, show what comes back.  Plain ES2020, no framework, no
// build step; everything comes from this origin (the server's CSP allows nothing else).
//
// The link is  https://HOST/#token=TOKEN  (the fragment never reaches a server, a log
// or a Referer header).  /?token=TOKEN also works: the page then moves the token into
// the fragment.  Diagnostics: &codec=VP8 or &codec=H264 offers only that video codec.
//
// Signalling is docs/signalling.md: one WebSocket at /ws, join, offer/answer, trickled
// candidates, events.  Recovery: ICE restart (a new offer with iceRestart) when the
// media path breaks while the WebSocket stays up; when the WebSocket drops, reconnect
// with back-off and join again with the same token (the gateway then makes a new media
// session, so the page makes a new RTCPeerConnection for it).

'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ words

  const MEDIA_ERRORS = {
    NotAllowedError: {
      title: 'Camera and microphone are blocked',
      text: 'The browser was not allowed to use your camera and microphone, so you cannot join yet.',
      help: 'Look for the camera symbol in the address bar (on a phone: the browser’s site ' +
        'settings), choose Allow for the camera and the microphone, then press Try again.',
    },
    NotFoundError: {
      title: 'No camera or microphone found',
      text: 'This device has no camera or microphone that the browser can use.',
      help: 'Plug in a camera or headset (or check that it is switched on), then press Try again.',
    },
    NotReadableError: {
      title: 'Camera or microphone is busy',
      text: 'Another app is using your camera or microphone (for example another video call), ' +
        'or the device stopped working.',
      help: 'Close the other app, or unplug the device and plug it in again, then press Try again.',
    },
    OverconstrainedError: {
      title: 'That camera or microphone cannot be used',
      text: 'The chosen camera or microphone is not available any more or cannot work with ' +
        'the settings this page asks for.',
      help: 'Press Try again to use the default camera and microphone.',
    },
    AbortError: {
      title: 'The camera or microphone did not start',
      text: 'Starting the camera or microphone failed.',
      help: 'Press Try again. If it keeps failing, restart the browser.',
    },
    insecure: {
      title: 'This link must be opened securely',
      text: 'Browsers only allow the camera and microphone on secure pages (https://).',
      help: 'Open the link exactly as you received it; it starts with https://.',
    },
    unsupported: {
      title: 'This browser cannot make video calls',
      text: 'This browser does not support the video calls this page needs.',
      help: 'Use a recent version of Chrome, Firefox, Safari or Edge.',
    },
  };
  MEDIA_ERRORS.PermissionDeniedError = MEDIA_ERRORS.NotAllowedError;
  MEDIA_ERRORS.SecurityError = MEDIA_ERRORS.NotAllowedError;
  MEDIA_ERRORS.DevicesNotFoundError = MEDIA_ERRORS.NotFoundError;
  MEDIA_ERRORS.TrackStartError = MEDIA_ERRORS.NotReadableError;
  MEDIA_ERRORS.ConstraintNotSatisfiedError = MEDIA_ERRORS.OverconstrainedError;

  const LINK_PROBLEMS = {
    missing: {
      title: 'The visit link is incomplete',
      text: 'This page needs the full link from your visit invitation.',
      help: 'Open the link you were sent again; it ends with #token= and a long code. ' +
        'If you copied it, make sure you copied all of it.',
      retry: false,
    },
    4401: {
      title: 'This visit link is not valid',
      text: 'The gateway did not accept this link. It may be incomplete or changed.',
      help: 'Open the link you were sent again, or ask for a new one.',
      retry: false,
    },
    4403: {
      title: 'This link is for a different visit',
      text: 'The gateway did not let this page join with this link.',
      help: 'Open the link from your visit invitation, or ask for a new one.',
      retry: false,
    },
    4408: {
      title: 'This visit link has expired',
      text: 'Links only work for a short time around the visit.',
      help: 'Ask for a new link.',
      retry: false,
    },
    4429: {
      title: 'Too many attempts',
      text: 'This connection tried to join with wrong links too often.',
      help: 'Wait a few minutes, then press Try again.',
      retry: true,
    },
    1009: {
      title: 'The page sent something the gateway could not take',
      text: 'This is a fault in the visit page.',
      help: 'Reload the page. If it happens again, tell the facility.',
      retry: true,
    },
    server: {
      title: 'The visit service has a problem',
      text: 'The gateway had an internal error.',
      help: 'Press Try again in a minute. If it keeps happening, tell the facility.',
      retry: true,
    },
    unreachable: {
      title: 'Cannot reach the visit service',
      text: 'The page could not connect to the visit service for a while.',
      help: 'Check that your device is online (Wi-Fi or mobile data), then press Try again.',
      retry: true,
    },
    blocked: {
      title: 'The video could not connect',
      text: 'The page reached the visit service, but video and sound could not get through ' +
        'this network.',
      help: 'Try another network (for example mobile data instead of Wi-Fi) or another ' +
        'device, then press Try again.',
      retry: true,
    },
    sdp: {
      title: 'The call could not be set up',
      text: 'The gateway could not use what this browser offered.',
      help: 'Press Try again, or use another browser (Chrome, Firefox, Safari or Edge).',
      retry: true,
    },
  };

  const ENDED_REASONS = {
    hangup: 'You hung up.',
    'media-closed': 'The video connection was closed.',
    'time-limit': 'The time for this visit is up.',
    'prepaid balance exhausted': 'The money on the account that pays for this visit ran out.',
    'funds-exhausted': 'The money on the account that pays for this visit ran out.',
    'peer-hangup': 'The other person hung up.',
    'remote-hangup': 'The other person hung up.',
    staff: 'Facility staff ended the visit.',
    cancelled: 'The visit was cancelled.',
    shutdown: 'The visit service was restarted.',
    error: 'A technical problem ended the visit.',
    'connection-lost': 'The connection was lost and could not be restored.',
  };

  // ------------------------------------------------------------------ the link

  function readLink() {
    const hash = new URLSearchParams(location.hash.replace(/^#/, ''));
    const query = new URLSearchParams(location.search);
    let token = (hash.get('token') || '').trim();
    if (!token && query.get('token')) {
      // Move the token out of the query so reloads and bookmarks stop sending it.
      token = query.get('token').trim();
      query.delete('token');
      hash.set('token', token);
      const rest = query.toString();
      history.replaceState(null, '', location.pathname + (rest ? '?' + rest : '') + '#' + hash);
    }
    const codec = (hash.get('codec') || query.get('codec') || '').toUpperCase();
    return { token, codec: ['VP8', 'VP9', 'H264', 'AV1'].includes(codec) ? codec : '' };
  }

  // ------------------------------------------------------------------ state

  const link = readLink();
  const ui = {
    status: $('status'), timer: $('timer'), quality: $('quality'),
    qualityText: $('quality-text'), qualityDetail: $('quality-detail'), notice: $('notice'),
    lobby: $('lobby'), join: $('join'), problem: $('problem'), problemTitle: $('problem-title'),
    problemText: $('problem-text'), problemHelp: $('problem-help'), retry: $('retry'),
    call: $('call'), remote: $('remote'), remoteWait: $('remote-wait'), self: $('self'),
    selfOff: $('self-off'), sound: $('sound'), mic: $('mic'), cam: $('cam'),
    hangup: $('hangup'), cameraSelect: $('camera-select'), micSelect: $('mic-select'),
    ended: $('ended'), endedTitle: $('ended-title'), endedReason: $('ended-reason'),
    rejoin: $('rejoin'),
  };

  const RECONNECT_DELAYS = [500, 1000, 2000, 4000, 8000, 10000];
  const GIVE_UP_AFTER = 120000; // ms without a working join
  const JOIN_TIMEOUT = 15000; // ms from opening a WebSocket to "joined"
  const ICE_DISCONNECTED_GRACE = 2500; // ms of "disconnected" before an ICE restart
  const ICE_RESTART_TIMEOUT = 12000; // ms for an ICE restart before a full re-join
  const FIRST_CONNECT_TIMEOUT = 15000; // ms from an answer to a first media connection
  const MEDIA_ATTEMPTS = 3; // full re-joins without media before giving up
  const STATS_INTERVAL = 2000;

  const st = {
    phase: 'lobby', // lobby | media | connecting | in-call | reconnecting | ended | problem
    hangingUp: false,
    ws: null,
    joined: false,
    everJoined: false,
    myPeers: new Set(), // our own peer ids (old ones too: a re-join must not say "someone left")
    iceServers: [],
    pc: null,
    offerInFlight: false,
    restartQueued: false,
    pendingRemote: [],
    localPending: [],
    localStream: null,
    remoteStream: null,
    micMuted: false,
    camOff: false,
    reconnectTimer: 0,
    reconnectAttempt: 0,
    lostSince: 0,
    joinTimer: 0,
    iceTimer: 0,
    escalateTimer: 0,
    statsTimer: 0,
    clockTimer: 0,
    callStart: 0,
    internalErrors: 0,
    iceRestarts: 0,
    rejoins: 0,
    mediaFailures: 0,
    endedReason: '',
    problemCode: '',
    lastStats: null,
    prevSample: null,
    wakeLock: null,
    netType: navigator.connection && navigator.connection.type,
  };

  // ------------------------------------------------------------------ small UI helpers

  let lastStatus = '';
  function status(text) {
    if (text !== lastStatus) {
      lastStatus = text;
      ui.status.textContent = text;
    }
  }

  function notice(text) {
    ui.notice.textContent = text;
    ui.notice.hidden = !text;
  }

  function show(section) {
    for (const s of [ui.lobby, ui.problem, ui.call, ui.ended]) s.hidden = s !== section;
  }

  function focusHeading(el) {
    try { el.focus({ preventScroll: false }); } catch (e) { /* old browsers */ }
  }

  function problem(info, code) {
    teardown();
    st.phase = 'problem';
    st.problemCode = String(code || '');
    ui.problemTitle.textContent = info.title;
    ui.problemText.textContent = info.text;
    ui.problemHelp.textContent = info.help || '';
    ui.retry.hidden = info.retry === false;
    status(info.title);
    show(ui.problem);
    focusHeading(ui.problemTitle);
  }

  function fmtClock(ms) {
    const s = Math.floor(ms / 1000);
    const h = Math.floor(s / 3600);
    const mm = String(Math.floor((s % 3600) / 60)).padStart(2, '0');
    const ss = String(s % 60).padStart(2, '0');
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }

  function tickClock() {
    if (st.callStart) ui.timer.textContent = fmtClock(Date.now() - st.callStart);
  }

  // ------------------------------------------------------------------ camera and microphone

  function videoConstraints(deviceId) {
    const c = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
    if (deviceId) c.deviceId = { exact: deviceId };
    else c.facingMode = 'user';
    return c;
  }

  function audioConstraints(deviceId) {
    const c = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    if (deviceId) c.deviceId = { exact: deviceId };
    return c;
  }

  async function openMedia() {
    const md = navigator.mediaDevices;
    try {
      return await md.getUserMedia({ audio: audioConstraints(), video: videoConstraints() });
    } catch (err) {
      if (err && (err.name === 'NotFoundError' || err.name === 'DevicesNotFoundError')) {
        // No camera: a visit with sound only is better than none.
        const audioOnly = await md.getUserMedia({ audio: audioConstraints() });
        notice('No camera was found: you are joining with sound only.');
        return audioOnly;
      }
      if (err && err.name === 'OverconstrainedError') {
        return md.getUserMedia({ audio: true, video: true }); // the plainest request
      }
      throw err;
    }
  }

  function trackOf(kind) {
    return st.localStream ? st.localStream.getTracks().find((t) => t.kind === kind) : undefined;
  }

  async function listDevices() {
    if (!navigator.mediaDevices.enumerateDevices) return;
    let devices = [];
    try { devices = await navigator.mediaDevices.enumerateDevices(); } catch (e) { return; }
    fillSelect(ui.cameraSelect, devices.filter((d) => d.kind === 'videoinput'), 'Camera', trackOf('video'));
    fillSelect(ui.micSelect, devices.filter((d) => d.kind === 'audioinput'), 'Microphone', trackOf('audio'));
  }

  function fillSelect(select, devices, noun, track) {
    const current = track && track.getSettings ? track.getSettings().deviceId : '';
    select.textContent = '';
    devices.forEach((d, i) => {
      const opt = document.createElement('option');
      opt.value = d.deviceId;
      opt.textContent = d.label || `${noun} ${i + 1}`;
      if (d.deviceId && d.deviceId === current) opt.selected = true;
      select.appendChild(opt);
    });
    if (!devices.length) {
      const opt = document.createElement('option');
      opt.value = '';
      opt.textContent = `No ${noun.toLowerCase()} found`;
      select.appendChild(opt);
    }
    select.disabled = devices.length < 2 && !!track;
  }

  async function switchDevice(kind, deviceId) {
    if (!st.localStream || !deviceId) return;
    const old = trackOf(kind);
    const constraints = kind === 'video'
      ? { video: videoConstraints(deviceId) } : { audio: audioConstraints(deviceId) };
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (err) {
      if (old && err && err.name === 'NotReadableError') {
        old.stop(); // phones often open one camera at a time
        try { stream = await navigator.mediaDevices.getUserMedia(constraints); } catch (e2) { err = e2; }
      }
      if (!stream) {
        const info = MEDIA_ERRORS[err && err.name] || MEDIA_ERRORS.AbortError;
        notice(`${info.title}. ${info.help}`);
        listDevices();
        return;
      }
    }
    const track = stream.getTracks()[0];
    track.enabled = kind === 'video' ? !st.camOff : !st.micMuted;
    if (st.pc) {
      const tr = st.pc.getTransceivers().find((t) => t.receiver.track && t.receiver.track.kind === kind);
      if (tr && tr.sender) {
        try { await tr.sender.replaceTrack(track); } catch (e) { console.warn('replaceTrack', e); }
      }
    }
    if (old) { st.localStream.removeTrack(old); old.stop(); }
    st.localStream.addTrack(track);
    watchTrack(track);
    if (kind === 'video') ui.self.srcObject = st.localStream;
    status(kind === 'video' ? 'Camera changed.' : 'Microphone changed.');
    listDevices();
  }

  function watchTrack(track) {
    track.addEventListener('ended', () => {
      if (st.phase === 'in-call' || st.phase === 'reconnecting' || st.phase === 'connecting') {
        notice(track.kind === 'video'
          ? 'Your camera stopped. Choose a camera under “Camera and microphone”.'
          : 'Your microphone stopped. Choose a microphone under “Camera and microphone”.');
        listDevices();
      }
    });
  }

  function setMic(muted) {
    st.micMuted = muted;
    const t = trackOf('audio');
    if (t) t.enabled = !muted;
    ui.mic.setAttribute('aria-pressed', String(muted));
    status(muted ? 'Your microphone is off. The other side cannot hear you.' : 'Your microphone is on.');
  }

  function setCam(off) {
    st.camOff = off;
    const t = trackOf('video');
    if (t) t.enabled = !off;
    ui.cam.setAttribute('aria-pressed', String(off));
    ui.selfOff.hidden = !off;
    ui.self.hidden = off;
    status(off ? 'Your camera is off. The other side cannot see you.' : 'Your camera is on.');
  }

  // ------------------------------------------------------------------ sound (iOS needs a tap)

  function unlockPlayback() {
    // Called inside the click on "Join": the element is started by a user gesture, so
    // later tracks play with sound (iOS Safari, Chrome's autoplay policy).
    if (!st.remoteStream) st.remoteStream = new MediaStream();
    ui.remote.srcObject = st.remoteStream;
    ui.remote.muted = false;
    const p = ui.remote.play();
    if (p && p.catch) p.catch(() => { /* nothing to play yet; tried again on tracks */ });
  }

  function playRemote() {
    const p = ui.remote.play();
    if (p && p.then) {
      p.then(() => { ui.sound.hidden = true; }).catch((err) => {
        if (err && err.name === 'NotAllowedError') ui.sound.hidden = false;
      });
    }
  }

  // ------------------------------------------------------------------ signalling

  function wsOpen() {
    return st.ws && st.ws.readyState === WebSocket.OPEN;
  }

  function send(msg) {
    if (wsOpen()) st.ws.send(JSON.stringify(msg));
  }

  function connect() {
    clearTimeout(st.reconnectTimer);
    if (st.ws) return;
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    st.ws = ws;
    st.joined = false;
    ws.onopen = () => {
      if (st.ws === ws) send({ type: 'join', token: link.token });
    };
    ws.onmessage = (ev) => {
      if (st.ws !== ws) return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      onMessage(msg).catch((err) => console.error('signalling', err));
    };
    ws.onclose = (ev) => {
      if (st.ws !== ws) return;
      st.ws = null;
      onSocketClosed(ev.code, ev.reason);
    };
    ws.onerror = () => { /* a close event follows */ };
    clearTimeout(st.joinTimer);
    st.joinTimer = setTimeout(() => {
      if (st.ws === ws && !st.joined) dropSocket();
    }, JOIN_TIMEOUT);
  }

  // Close our socket on purpose and join again on a new one.
  function dropSocket() {
    const ws = st.ws;
    st.ws = null;
    st.joined = false;
    if (ws) {
      ws.onclose = null;
      try { ws.close(1000, 'reconnecting'); } catch (e) { /* already closed */ }
    }
    scheduleReconnect();
  }

  function scheduleReconnect(now) {
    if (st.phase === 'ended' || st.phase === 'problem') return;
    clearTimeout(st.reconnectTimer);
    if (!st.lostSince) st.lostSince = Date.now();
    if (Date.now() - st.lostSince > GIVE_UP_AFTER) {
      problem(LINK_PROBLEMS.unreachable, 'unreachable');
      return;
    }
    st.phase = st.everJoined ? 'reconnecting' : 'connecting';
    const delay = now ? 0 : RECONNECT_DELAYS[Math.min(st.reconnectAttempt, RECONNECT_DELAYS.length - 1)];
    st.reconnectAttempt += 1;
    // navigator.onLine is only a hint (false on some networks that work): retry anyway.
    if (navigator.onLine === false) {
      status('Your device seems to be offline. Waiting for the network…');
    } else {
      status(st.everJoined ? 'Connection lost. Reconnecting…' : 'Connecting to the visit…');
    }
    st.reconnectTimer = setTimeout(connect, delay + Math.random() * 250);
  }

  function onSocketClosed(code, reason) {
    st.joined = false;
    st.offerInFlight = false;
    clearTimeout(st.joinTimer);
    if (st.phase === 'ended' || st.phase === 'problem') return;
    if (st.hangingUp) { finish('hangup'); return; }
    if (code === 1000) { finish(reason === 'hangup' ? 'hangup' : ''); return; }
    if (code === 4408 && st.everJoined) {
      // The call outlives its token, but a re-join needs a valid one.
      problem({ ...LINK_PROBLEMS[4408], text: 'The connection was lost and this link has ' +
        'expired in the meantime, so the page cannot join again.' }, code);
      return;
    }
    if (LINK_PROBLEMS[code]) { problem(LINK_PROBLEMS[code], code); return; }
    if (code === 1011) {
      st.internalErrors += 1;
      if (st.internalErrors > 1) { problem(LINK_PROBLEMS.server, 'server'); return; }
    }
    // 1001 (gateway restarting), 1006 (dropped), 1013 (busy), ...: try again.
    scheduleReconnect();
  }

  async function onMessage(msg) {
    switch (msg.type) {
      case 'joined': return onJoined(msg);
      case 'answer': return onAnswer(msg.sdp);
      case 'candidate': return onRemoteCandidate(msg);
      case 'event': return onEvent(msg);
      case 'error': return onError(msg);
      default: return undefined; // pong and future messages
    }
  }

  async function onJoined(msg) {
    clearTimeout(st.joinTimer);
    st.joined = true;
    st.myPeers.add(msg.peer);
    st.iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers : [];
    if (st.everJoined) st.rejoins += 1;
    st.everJoined = true;
    st.lostSince = 0;
    st.reconnectAttempt = 0;
    st.internalErrors = 0;
    if (st.phase !== 'in-call') st.phase = 'connecting';
    status(st.rejoins ? 'Reconnected to the visit. Restoring the video…' : 'Joined. Connecting the video…');
    // Each join has its own media session on the gateway: a fresh peer connection for it.
    newPeerConnection();
    await sendOffer();
  }

  function onError(msg) {
    console.warn('gateway error', msg.code, msg.message);
    if (msg.code === 'invalid_sdp') problem(LINK_PROBLEMS.sdp, 'sdp');
    else if (msg.code === 'media_unavailable') {
      status('The video service is busy. Retrying…');
      setTimeout(() => { if (st.joined) dropSocket(); }, 3000);
    }
  }

  function onEvent(ev) {
    switch (ev.kind) {
      case 'connected':
        break; // the peer connection's own state drives the status
      case 'peer-joined':
        if (!st.myPeers.has(ev.peer)) status('Someone joined the visit.');
        break;
      case 'peer-left':
        if (!st.myPeers.has(ev.peer)) status('Someone left the visit.');
        break;
      case 'warning-minutes-left': {
        const n = Number(ev.minutes) || 0;
        notice(n < 1 ? 'Less than a minute left in this visit.'
          : `${n} minute${n === 1 ? '' : 's'} left in this visit.`);
        break;
      }
      case 'balance-low':
        notice('The money on the account that pays for this visit is running low. ' +
          'The visit may end soon.');
        break;
      case 'ended':
        finish(typeof ev.reason === 'string' ? ev.reason : '');
        break;
      default:
        break;
    }
  }

  // ------------------------------------------------------------------ WebRTC

  function preferCodec(transceiver) {
    if (!link.codec || !transceiver.setCodecPreferences || !window.RTCRtpReceiver ||
        !RTCRtpReceiver.getCapabilities) return;
    const caps = RTCRtpReceiver.getCapabilities('video');
    if (!caps) return;
    const want = caps.codecs.filter((c) => c.mimeType.toUpperCase() === `VIDEO/${link.codec}`);
    if (want.length) {
      try { transceiver.setCodecPreferences(want); } catch (e) { console.warn('codec', e); }
    }
  }

  function newPeerConnection() {
    closePeerConnection();
    const pc = new RTCPeerConnection({ iceServers: st.iceServers, bundlePolicy: 'max-bundle' });
    st.pc = pc;
    st.offerInFlight = false;
    st.restartQueued = false;
    st.pendingRemote = [];
    st.localPending = [];
    st.prevSample = null;
    const stream = st.localStream;
    for (const track of stream.getTracks()) {
      const tr = pc.addTransceiver(track, { direction: 'sendrecv', streams: [stream] });
      if (track.kind === 'video') preferCodec(tr);
    }
    if (!trackOf('video')) preferCodec(pc.addTransceiver('video', { direction: 'recvonly' }));
    if (!trackOf('audio')) pc.addTransceiver('audio', { direction: 'recvonly' });

    pc.ontrack = (ev) => {
      if (st.pc !== pc) return;
      const rs = st.remoteStream;
      for (const old of rs.getTracks()) if (old.kind === ev.track.kind) rs.removeTrack(old);
      rs.addTrack(ev.track);
      ui.remote.srcObject = rs;
      playRemote();
    };
    pc.onicecandidate = (ev) => {
      if (st.pc !== pc) return;
      const c = ev.candidate;
      const msg = c && c.candidate
        ? { type: 'candidate', candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex }
        : { type: 'candidate', candidate: null };
      if (st.offerInFlight) st.localPending.push(msg); // sent once the answer is applied
      else send(msg);
    };
    pc.oniceconnectionstatechange = () => { if (st.pc === pc) onIceState(pc); };
    pc.onconnectionstatechange = () => { if (st.pc === pc) onIceState(pc); };
  }

  function closePeerConnection() {
    const pc = st.pc;
    st.pc = null;
    clearTimeout(st.iceTimer);
    clearTimeout(st.escalateTimer);
    if (pc) {
      pc.ontrack = pc.onicecandidate = pc.oniceconnectionstatechange = pc.onconnectionstatechange = null;
      try { pc.close(); } catch (e) { /* closed */ }
    }
  }

  async function sendOffer(options) {
    const pc = st.pc;
    if (!pc || !st.joined) return;
    if (st.offerInFlight) {
      if (options && options.iceRestart) st.restartQueued = true;
      return;
    }
    st.offerInFlight = true;
    try {
      const offer = await pc.createOffer(options);
      if (st.pc !== pc) return;
      await pc.setLocalDescription(offer);
      if (st.pc !== pc) return;
      send({ type: 'offer', sdp: pc.localDescription.sdp });
    } catch (err) {
      st.offerInFlight = false;
      console.error('offer', err);
      problem(LINK_PROBLEMS.sdp, 'sdp');
    }
  }

  async function onAnswer(sdp) {
    const pc = st.pc;
    if (!pc || pc.signalingState !== 'have-local-offer') return;
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp });
    } catch (err) {
      console.error('answer', err);
      problem(LINK_PROBLEMS.sdp, 'sdp');
      return;
    }
    st.offerInFlight = false;
    // Our candidates go out only now: were the gateway to learn them with the offer, its
    // checks could reach the browser before the answer did, and after an ICE restart
    // Chrome then sometimes never checks the new path.
    const mine = st.localPending;
    st.localPending = [];
    for (const m of mine) send(m);
    const pending = st.pendingRemote;
    st.pendingRemote = [];
    for (const c of pending) await addRemoteCandidate(pc, c);
    onIceState(pc); // a restart on a working path may change no state at all
    const ice = pc.iceConnectionState;
    if (ice === 'new' || ice === 'checking') {
      clearTimeout(st.iceTimer);
      st.iceTimer = setTimeout(() => {
        st.iceTimer = 0;
        const now = pc.iceConnectionState;
        if (st.pc === pc && now !== 'connected' && now !== 'completed') restartIce('no connection');
      }, FIRST_CONNECT_TIMEOUT);
    }
    if (st.restartQueued) {
      st.restartQueued = false;
      restartIce('queued');
    }
  }

  async function onRemoteCandidate(msg) {
    const pc = st.pc;
    if (!pc) return;
    if (!pc.remoteDescription || st.offerInFlight) { st.pendingRemote.push(msg); return; }
    await addRemoteCandidate(pc, msg);
  }

  async function addRemoteCandidate(pc, msg) {
    if (!msg.candidate) return; // end of candidates: nothing browsers need
    try {
      await pc.addIceCandidate({ candidate: msg.candidate, sdpMid: msg.sdpMid,
        sdpMLineIndex: msg.sdpMLineIndex });
    } catch (err) {
      console.warn('candidate', err);
    }
  }

  function onIceState(pc) {
    const ice = pc.iceConnectionState;
    const conn = pc.connectionState || ice;
    if (conn === 'connected' || ice === 'connected' || ice === 'completed') {
      clearTimeout(st.iceTimer);
      clearTimeout(st.escalateTimer);
      st.iceTimer = st.escalateTimer = 0;
      st.mediaFailures = 0;
      if (st.phase !== 'in-call') {
        st.phase = 'in-call';
        if (!st.callStart) st.callStart = Date.now();
        ui.timer.hidden = false;
        ui.quality.hidden = false;
        tickClock();
        clearInterval(st.clockTimer);
        st.clockTimer = setInterval(tickClock, 1000);
        status(st.rejoins || st.iceRestarts ? 'Reconnected.' : 'Connected. You are in the visit.');
        setTimeout(pollStats, 1000); // a first quality reading soon, then every 2 s
      }
      return;
    }
    if (ice === 'failed' || conn === 'failed') {
      clearTimeout(st.iceTimer);
      restartIce('failed');
    } else if (ice === 'disconnected') {
      status('The connection is unstable. Trying to recover…');
      clearTimeout(st.iceTimer);
      st.iceTimer = setTimeout(() => {
        if (st.pc === pc && pc.iceConnectionState !== 'connected' &&
            pc.iceConnectionState !== 'completed') restartIce('disconnected');
      }, ICE_DISCONNECTED_GRACE);
    }
  }

  // A new media path on the same gateway session; if that does not work either, a
  // whole new join.
  function restartIce(why) {
    if (!st.pc || st.phase === 'ended' || st.phase === 'problem') return;
    if (!wsOpen() || !st.joined) { scheduleReconnect(true); return; }
    st.iceRestarts += 1;
    const ice = st.pc.iceConnectionState;
    if (ice !== 'connected' && ice !== 'completed') {
      // (A restart while media still flows, e.g. after a network change, stays quiet.)
      if (st.phase === 'in-call') st.phase = 'reconnecting';
      status('Reconnecting the video…');
    }
    console.info('ICE restart:', why);
    sendOffer({ iceRestart: true });
    clearTimeout(st.escalateTimer);
    const pc = st.pc;
    st.escalateTimer = setTimeout(() => {
      const now = pc.iceConnectionState;
      if (st.pc !== pc || now === 'connected' || now === 'completed') return;
      st.mediaFailures += 1;
      if (st.mediaFailures >= MEDIA_ATTEMPTS) problem(LINK_PROBLEMS.blocked, 'blocked');
      else dropSocket(); // a whole new join and media session
    }, ICE_RESTART_TIMEOUT);
  }

  // ------------------------------------------------------------------ quality (getStats)

  async function collectStats() {
    const pc = st.pc;
    if (!pc) return null;
    const report = await pc.getStats();
    const out = {
      at: Date.now(), connectionState: pc.connectionState || pc.iceConnectionState,
      video: null, audio: null, sentVideo: null, sentAudio: null, rttMs: null,
      bytesReceived: 0, bytesSent: 0,
    };
    let selectedPair = null;
    let remoteInbound = null;
    const pairs = [];
    report.forEach((s) => {
      const kind = s.kind || s.mediaType;
      const codec = s.codecId && report.get(s.codecId);
      if (s.type === 'inbound-rtp') {
        const entry = {
          codec: codec ? codec.mimeType : '', packetsReceived: s.packetsReceived || 0,
          packetsLost: s.packetsLost || 0, bytesReceived: s.bytesReceived || 0,
          framesDecoded: s.framesDecoded || 0, frameWidth: s.frameWidth || 0,
          frameHeight: s.frameHeight || 0, totalSamplesReceived: s.totalSamplesReceived || 0,
          jitter: s.jitter || 0,
        };
        out.bytesReceived += entry.bytesReceived;
        if (kind === 'video') out.video = entry; else if (kind === 'audio') out.audio = entry;
      } else if (s.type === 'outbound-rtp') {
        const entry = { codec: codec ? codec.mimeType : '', packetsSent: s.packetsSent || 0,
          bytesSent: s.bytesSent || 0, framesEncoded: s.framesEncoded || 0 };
        out.bytesSent += entry.bytesSent;
        if (kind === 'video') out.sentVideo = entry; else if (kind === 'audio') out.sentAudio = entry;
      } else if (s.type === 'transport' && s.selectedCandidatePairId) {
        selectedPair = report.get(s.selectedCandidatePairId) || selectedPair;
      } else if (s.type === 'candidate-pair') {
        pairs.push(s);
      } else if (s.type === 'remote-inbound-rtp' && typeof s.roundTripTime === 'number') {
        remoteInbound = s;
      }
    });
    if (!selectedPair) {
      selectedPair = pairs.find((p) => p.selected) ||
        pairs.find((p) => p.nominated && p.state === 'succeeded') || null;
    }
    if (selectedPair && typeof selectedPair.currentRoundTripTime === 'number') {
      out.rttMs = selectedPair.currentRoundTripTime * 1000;
    } else if (remoteInbound) {
      out.rttMs = remoteInbound.roundTripTime * 1000;
    }
    return out;
  }

  function judge(sample, prev) {
    const dt = prev ? (sample.at - prev.at) / 1000 : 0;
    if (!prev || dt <= 0) return null;
    const v = sample.video || {};
    const pv = prev.video || {};
    const a = sample.audio || {};
    const pa = prev.audio || {};
    const recv = (v.packetsReceived || 0) - (pv.packetsReceived || 0) +
      (a.packetsReceived || 0) - (pa.packetsReceived || 0);
    const lost = Math.max(0, (v.packetsLost || 0) - (pv.packetsLost || 0) +
      (a.packetsLost || 0) - (pa.packetsLost || 0));
    const lossPct = recv + lost > 0 ? (100 * lost) / (recv + lost) : 0;
    const fps = sample.video ? ((v.framesDecoded || 0) - (pv.framesDecoded || 0)) / dt : null;
    const kbps = ((sample.bytesReceived - prev.bytesReceived) * 8) / dt / 1000;
    const rtt = sample.rttMs;
    let level = 'good';
    if (recv === 0 || lossPct > 8 || (rtt !== null && rtt > 600) || (fps !== null && fps < 5)) {
      level = 'poor';
    } else if (lossPct > 2 || (rtt !== null && rtt > 300) || (fps !== null && fps < 15)) {
      level = 'fair';
    }
    return { level, lossPct, fps, kbps, rtt };
  }

  async function pollStats() {
    let sample;
    try { sample = await collectStats(); } catch (e) { return; }
    if (!sample) return;
    const q = judge(sample, st.prevSample);
    st.prevSample = sample;
    st.lastStats = sample;
    if (!q || st.phase !== 'in-call') return;
    const words = { good: 'good', fair: 'fair', poor: 'poor' }[q.level];
    ui.quality.dataset.level = q.level;
    ui.qualityText.textContent = `Connection: ${words}`;
    const parts = [];
    if (q.rtt !== null) parts.push(`${Math.round(q.rtt)} ms`);
    parts.push(`${q.lossPct.toFixed(1)} % loss`);
    if (q.fps !== null) parts.push(`${Math.round(q.fps)} fps`);
    parts.push(q.kbps >= 1000 ? `${(q.kbps / 1000).toFixed(1)} Mbit/s` : `${Math.round(q.kbps)} kbit/s`);
    ui.qualityDetail.textContent = parts.join(' · ');
  }

  // ------------------------------------------------------------------ start, hang up, end

  async function start() {
    notice('');
    unlockPlayback();
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      problem(window.isSecureContext ? MEDIA_ERRORS.unsupported : MEDIA_ERRORS.insecure,
        window.isSecureContext ? 'unsupported' : 'insecure');
      return;
    }
    if (!window.RTCPeerConnection) { problem(MEDIA_ERRORS.unsupported, 'unsupported'); return; }
    st.phase = 'media';
    ui.join.disabled = true;
    status('Asking for your camera and microphone…');
    try {
      st.localStream = await openMedia();
    } catch (err) {
      ui.join.disabled = false;
      const name = err && err.name;
      problem(MEDIA_ERRORS[name] || { ...MEDIA_ERRORS.AbortError,
        text: `The camera or microphone could not be started (${name || err}).` }, name || 'media');
      return;
    }
    ui.join.disabled = false;
    st.localStream.getTracks().forEach(watchTrack);
    ui.self.srcObject = st.localStream;
    ui.self.hidden = !trackOf('video');
    ui.selfOff.hidden = !!trackOf('video');
    if (!trackOf('video')) { ui.selfOff.textContent = 'No camera'; ui.cam.disabled = true; }
    setMicSilently(st.micMuted);
    show(ui.call);
    focusHeading($('call-title'));
    listDevices();
    st.phase = 'connecting';
    st.hangingUp = false;
    st.lostSince = Date.now();
    st.reconnectAttempt = 0;
    status('Connecting to the visit…');
    clearInterval(st.statsTimer);
    st.statsTimer = setInterval(pollStats, STATS_INTERVAL);
    acquireWakeLock();
    connect();
  }

  function setMicSilently(muted) {
    const t = trackOf('audio');
    if (t) t.enabled = !muted;
  }

  function hangUp() {
    if (st.phase === 'ended') return;
    st.hangingUp = true;
    status('Ending the visit…');
    if (wsOpen() && st.joined) {
      send({ type: 'hangup' });
      // The gateway answers with "ended" and closes; do not wait long for it.
      setTimeout(() => finish('hangup'), 1500);
    } else {
      finish('hangup');
    }
  }

  function teardown() {
    clearTimeout(st.reconnectTimer);
    clearTimeout(st.joinTimer);
    clearInterval(st.statsTimer);
    clearInterval(st.clockTimer);
    closePeerConnection();
    const ws = st.ws;
    st.ws = null;
    st.joined = false;
    if (ws) {
      ws.onclose = null;
      try { ws.close(1000, 'done'); } catch (e) { /* closed */ }
    }
    if (st.localStream) {
      st.localStream.getTracks().forEach((t) => t.stop()); // camera light off
      st.localStream = null;
    }
    ui.self.srcObject = null;
    if (st.remoteStream) st.remoteStream.getTracks().forEach((t) => st.remoteStream.removeTrack(t));
    ui.timer.hidden = true;
    ui.quality.hidden = true;
    releaseWakeLock();
  }

  function finish(reason) {
    if (st.phase === 'ended') return;
    teardown();
    st.phase = 'ended';
    st.endedReason = reason || '';
    const words = ENDED_REASONS[reason] ||
      (reason ? `The visit has ended (${reason}).` : 'The visit has ended.');
    const took = st.callStart ? ` It lasted ${fmtClock(Date.now() - st.callStart)}.` : '';
    ui.endedReason.textContent = words + took;
    status('The visit has ended.');
    notice('');
    show(ui.ended);
    focusHeading(ui.endedTitle);
  }

  // ------------------------------------------------------------------ screen stays on

  async function acquireWakeLock() {
    try {
      if (navigator.wakeLock && document.visibilityState === 'visible') {
        st.wakeLock = await navigator.wakeLock.request('screen');
      }
    } catch (e) { /* not allowed here: fine */ }
  }

  function releaseWakeLock() {
    if (st.wakeLock) { st.wakeLock.release().catch(() => {}); st.wakeLock = null; }
  }

  // ------------------------------------------------------------------ network changes

  function onNetworkChange(why) {
    if (!['in-call', 'reconnecting', 'connecting'].includes(st.phase)) return;
    if (wsOpen() && st.joined && st.pc) restartIce(why);
    else { st.reconnectAttempt = 0; scheduleReconnect(true); }
  }

  window.addEventListener('online', () => onNetworkChange('online'));
  window.addEventListener('offline', () => {
    if (['in-call', 'reconnecting', 'connecting'].includes(st.phase)) {
      status('Your device is offline. Waiting for the network to come back…');
    }
  });
  if (navigator.connection && navigator.connection.addEventListener) {
    navigator.connection.addEventListener('change', () => {
      const type = navigator.connection.type;
      if (type && type !== st.netType) { st.netType = type; onNetworkChange('network type'); }
    });
  }
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && st.phase === 'in-call') acquireWakeLock();
  });

  // ------------------------------------------------------------------ wiring

  ui.join.addEventListener('click', start);
  ui.retry.addEventListener('click', () => {
    st.phase = 'lobby';
    st.everJoined = false;
    st.rejoins = 0;
    show(ui.lobby);
    start();
  });
  ui.rejoin.addEventListener('click', () => { location.reload(); });
  ui.hangup.addEventListener('click', hangUp);
  ui.mic.addEventListener('click', () => setMic(!st.micMuted));
  ui.cam.addEventListener('click', () => setCam(!st.camOff));
  ui.sound.addEventListener('click', () => { ui.remote.muted = false; playRemote(); });
  ui.cameraSelect.addEventListener('change', () => switchDevice('video', ui.cameraSelect.value));
  ui.micSelect.addEventListener('change', () => switchDevice('audio', ui.micSelect.value));
  ui.remote.addEventListener('resize', () => { ui.remoteWait.hidden = ui.remote.videoWidth > 0; });
  ui.remote.addEventListener('loadeddata', () => { ui.remoteWait.hidden = ui.remote.videoWidth > 0; });
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener('devicechange', () => { if (st.localStream) listDevices(); });
  }

  // Diagnostics for support staff (browser console) and the browser tests; no token.
  window.gwCall = Object.freeze({
    state: () => ({
      phase: st.phase, joined: st.joined, everJoined: st.everJoined,
      ws: st.ws ? st.ws.readyState : -1,
      connectionState: st.pc ? (st.pc.connectionState || st.pc.iceConnectionState) : 'none',
      iceConnectionState: st.pc ? st.pc.iceConnectionState : 'none',
      iceRestarts: st.iceRestarts, rejoins: st.rejoins, endedReason: st.endedReason,
      problem: st.problemCode, status: ui.status.textContent, codec: link.codec,
      micMuted: st.micMuted, camOff: st.camOff,
    }),
    stats: () => collectStats(),
    restartIce: () => restartIce('requested'),
  });

  if (!link.token) {
    problem(LINK_PROBLEMS.missing, 'missing');
  } else {
    status('Ready to join.');
    show(ui.lobby);
    focusHeading($('lobby-title'));
  }
})();
