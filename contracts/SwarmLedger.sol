// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ISwarmLedger} from "./ISwarmLedger.sol";

/// @title SwarmLedger
/// @notice The source of truth of one swarm-learning task: who is a member, what each site committed
/// in each round, who merges it, and which model came out.
/// @dev Storage is packed so that a commit writes two fresh slots and a reveal none (gas goals: commit <= 90k,
/// reveal <= 50k, elect/finalize <= 150k at 8 members). Round phases are derived from stored blocks and the
/// hot slot. The leader is drawn by commit-reveal: each commit carries a seal of a fresh secret, the secrets
/// are revealed once commits have closed, and the draw hashes all revealed secrets (see elect()).
/// Secure-aggregation rounds add one advertise() per site before the first commit; its keys live only in
/// the KeysAdvertised event, the contract keeps the count that every commit must quote.
contract SwarmLedger is ISwarmLedger {
    /// @notice Committer bitmasks are uint128 (the reveal mask shares the hot slot, the failed and revealed
    /// masks share a round slot), so a round holds at most this many commits.
    uint256 public constant MAX_COMMITTERS = 128;
    /// @notice Join requests that may wait at once. Without a bound anyone could grow the member list, and
    /// with it getMembers() (which every daemon reads), past what a node answers within its call gas cap.
    uint256 public constant MAX_PENDING = 256;
    uint256 private constant MAX_ENDPOINT_BYTES = 256;
    uint256 private constant MAX_NAME_BYTES = 32;

    bytes32 private immutable _taskHash;
    bytes32 private immutable _initialModelHash;
    uint32 private immutable _minPeers;
    uint32 private immutable _commitWindow;
    uint32 private immutable _leaderTimeout;
    uint32 private immutable _revealWindow;
    bool private immutable _majorityAdmission;
    // Bound at deploy like the task: in a plain task nobody may advertise keys, or any member could make
    // every plain commit (which quotes keyCount 0) revert StaleKeys.
    bool private immutable _secureAggregation;
    uint64 private immutable _deployBlock;

    struct Member {
        bytes32 curveKey;
        MemberStatus status;
        uint32 joinedBlock;
        uint32 statusBlock;
        uint48 lastCommitRound; // round + 1 of the member's latest commit; 0 = never committed
        uint16 lastCommitIndex; // its position among that round's commits
        uint32 voteEpoch; // bumped on every status change, so old ballots never count again
        uint16 admitVotes;
        uint16 removeVotes;
        uint48 lastAdvertRound; // round + 1 of the member's latest advertise(), in the slot it reads anyway
        // The election seal of the member's latest commit. requestJoin leaves it non-zero, so a commit
        // rewrites a live slot (5k gas) instead of filling a fresh one (22k).
        bytes32 seal;
        string endpoint;
    }

    // One slot for site, block, samples and epsilon (160 + 32 + 32 + 32 bits): a uint32 block number lasts
    // 136 years at one block a second, and the epsilon rides in the slot the commit writes anyway.
    struct CommitEntry {
        address site;
        uint32 blockNumber;
        uint32 nSamples;
        uint32 milliEpsilon;
        bytes32 updateHash;
    }

    struct RoundData {
        uint48 openedBlock; // written when the round opens, so the first commit pays no fresh slot
        uint48 electedBlock; // latest election of this round (the current term's)
        uint48 closedBlock; // finalized or abandoned
        uint32 term;
        uint16 commitCount;
        uint16 keyCount; // sites that advertised secure-aggregation keys (frozen at election; 0 = plain)
        bool abandoned;
        address leader;
        bytes32 mergedHash;
        // Outcome of commit i in nibble i (commits 0-63 in [0], 64-127 in [1]). Included is 0, so a round that
        // included everyone writes neither slot.
        uint256[2] outcomes;
        uint128 failedMask; // bit i: committer i failed as leader this round
        uint128 revealedMask; // bit i: committer i revealed its election secret (frozen at election)
        mapping(uint256 => CommitEntry) commits;
    }

    // The hot slot: a commit reads and writes only this, its member record and its own entry. While the
    // current round is open its commit count and its advertised-key count live here (copied into the round
    // at election), which keeps commit() under 90k gas.
    uint48 private _currentRound;
    uint16 private _openCommits;
    uint16 private _openKeys;
    bool private _currentElected;
    uint32 private _activeCount;
    bool private _bootstrapped;
    uint128 private _revealMask; // bit i: the current round's committer i revealed (until the election)

    // XOR of keccak256(abi.encode(secret, site)) over the current round's reveals, on top of a non-zero
    // start value (so the first reveal rewrites a live slot); reset when the next round opens.
    bytes32 private _entropy = ENTROPY_START;
    bytes32 private constant ENTROPY_START = bytes32(uint256(1));
    bytes32 private constant SEAL_PLACEHOLDER = bytes32(uint256(1));
    uint8 private constant OUTCOME_COUNT = 7; // Outcome.Included .. Outcome.Recovered
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant RECEIPT_TYPEHASH =
        keccak256("Receipt(uint256 round,uint32 term,address site,bytes32 updateHash)");
    // Upper bound of a canonical ECDSA `s` (EIP-2): the other half would let one receipt have two encodings.
    uint256 private constant HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    address private _admin;
    uint32 private _pendingCount; // packed with _admin: requestJoin never touches commit()'s hot slot
    address private _pendingAdmin; // offered the admin role by transferAdmin(), until it accepts

    address[] private _memberList;
    mapping(address => Member) private _members;
    mapping(bytes32 => address) private _curveKeyOwner;
    mapping(bytes32 => bool) private _ballots; // keccak(candidate, epoch, admit?, voter)
    mapping(uint256 => RoundData) private _rounds;
    mapping(uint256 => uint128) private _disputed; // round -> bit i: committer i disputed its outcome
    mapping(address => uint256) private _disputes; // leader -> disputes recorded against it

    /// @param taskHash canonical hash of the task (bundle + swarm settings) every site trains
    /// @param initialModelHash hash of the weights round 0 starts from
    /// @param minPeers commits needed before a leader can be elected
    /// @param commitWindow blocks after a round's first commit after which elect() no longer waits for everyone
    /// @param leaderTimeout blocks after an election after which reelect() may replace the leader
    /// @param revealWindow blocks after commits close during which committers reveal their election secrets
    /// @param majorityAdmission false: the admin admits and removes; true: a majority of active members does
    /// @param secureAggregation whether rounds use secure aggregation (sites advertise keys before committing)
    constructor(
        bytes32 taskHash,
        bytes32 initialModelHash,
        uint32 minPeers,
        uint32 commitWindow,
        uint32 leaderTimeout,
        uint32 revealWindow,
        bool majorityAdmission,
        bool secureAggregation
    ) {
        if (taskHash == bytes32(0)) revert SwarmLedgerInvalidBinding("taskHash");
        if (initialModelHash == bytes32(0)) revert SwarmLedgerInvalidBinding("initialModelHash");
        if (minPeers == 0 || minPeers > MAX_COMMITTERS) revert SwarmLedgerInvalidBinding("minPeers");
        if (leaderTimeout == 0) revert SwarmLedgerInvalidBinding("leaderTimeout");
        if (revealWindow == 0) revert SwarmLedgerInvalidBinding("revealWindow");
        _taskHash = taskHash;
        _initialModelHash = initialModelHash;
        _minPeers = minPeers;
        _commitWindow = commitWindow;
        _leaderTimeout = leaderTimeout;
        _revealWindow = revealWindow;
        _majorityAdmission = majorityAdmission;
        _secureAggregation = secureAggregation;
        _deployBlock = uint64(block.number);
        _admin = msg.sender;
        _rounds[0].openedBlock = uint48(block.number);
        emit AdminTransferred(address(0), msg.sender);
        emit RoundOpened(0, initialModelHash);
    }

    // ================================================================== admin

    /// @inheritdoc ISwarmLedger
    function transferAdmin(address newAdmin) external {
        _onlyAdmin();
        if (newAdmin == address(0)) revert SwarmLedgerZeroAddress();
        _pendingAdmin = newAdmin;
        emit AdminTransferStarted(msg.sender, newAdmin);
    }

    /// @inheritdoc ISwarmLedger
    function acceptAdmin() external {
        address pending = _pendingAdmin;
        if (msg.sender != pending) revert SwarmLedgerNotPendingAdmin(msg.sender, pending);
        address previous = _admin;
        _admin = pending;
        delete _pendingAdmin;
        emit AdminTransferred(previous, pending);
    }

    /// @inheritdoc ISwarmLedger
    function cancelAdminTransfer() external {
        _onlyAdmin();
        address pending = _pendingAdmin;
        if (pending == address(0)) revert SwarmLedgerNoPendingAdmin();
        delete _pendingAdmin;
        emit AdminTransferCancelled(msg.sender, pending);
    }

    function _onlyAdmin() private view {
        if (msg.sender != _admin) revert SwarmLedgerNotAdmin(msg.sender);
    }

    // ================================================================== membership

    /// @inheritdoc ISwarmLedger
    /// @dev The name is emitted, not stored: a join pays its calldata and log bytes only.
    function requestJoin(bytes32 curveKey, string calldata endpoint, string calldata name) external {
        Member storage m = _members[msg.sender];
        MemberStatus status = m.status;
        if (status == MemberStatus.Pending || status == MemberStatus.Active) revert SwarmLedgerAlreadyMember(msg.sender, status);
        if (curveKey == bytes32(0)) revert SwarmLedgerInvalidCurveKey();
        address owner = _curveKeyOwner[curveKey];
        if (owner != address(0) && owner != msg.sender) revert SwarmLedgerCurveKeyTaken(curveKey, owner);
        _checkEndpoint(endpoint);
        if (bytes(name).length > MAX_NAME_BYTES) revert SwarmLedgerInvalidName(bytes(name).length);
        uint32 pending = _pendingCount;
        if (pending >= MAX_PENDING) revert SwarmLedgerTooManyPending(MAX_PENDING);

        _pendingCount = pending + 1;
        if (status == MemberStatus.None) {
            _memberList.push(msg.sender);
            m.joinedBlock = uint32(block.number);
            m.seal = SEAL_PLACEHOLDER;
        }
        if (owner == address(0)) _curveKeyOwner[curveKey] = msg.sender;
        m.curveKey = curveKey;
        m.endpoint = endpoint;
        _setStatus(m, MemberStatus.Pending);
        emit JoinRequested(msg.sender, curveKey, endpoint, name);
    }

    /// @inheritdoc ISwarmLedger
    function admit(address account) external {
        Member storage m = _members[account];
        if (m.status != MemberStatus.Pending) revert SwarmLedgerNotPending(account, m.status);
        if (_directAuthority()) {
            _admitNow(account, m);
            return;
        }
        uint256 needed = _activeCount / 2 + 1; // strict majority of the active members
        uint256 votes = _vote(account, m, true);
        emit VoteCast(account, msg.sender, true, votes, needed);
        if (votes >= needed) _admitNow(account, m);
    }

    /// @inheritdoc ISwarmLedger
    function remove(address account) external {
        Member storage m = _members[account];
        MemberStatus status = m.status;
        if (status != MemberStatus.Pending && status != MemberStatus.Active) revert SwarmLedgerNotRemovable(account, status);
        if (_directAuthority()) {
            _removeNow(account, m);
            return;
        }
        // The target does not vote on its own removal, so the majority is taken over the others.
        uint256 electorate = status == MemberStatus.Active ? uint256(_activeCount) - 1 : _activeCount;
        uint256 needed = electorate / 2 + 1;
        uint256 votes = _vote(account, m, false);
        emit VoteCast(account, msg.sender, false, votes, needed);
        if (votes >= needed) _removeNow(account, m);
    }

    /// @inheritdoc ISwarmLedger
    function updateEndpoint(string calldata endpoint) external {
        Member storage m = _members[msg.sender];
        if (m.status != MemberStatus.Pending && m.status != MemberStatus.Active) revert SwarmLedgerNotMember(msg.sender);
        _checkEndpoint(endpoint);
        m.endpoint = endpoint;
        emit EndpointUpdated(msg.sender, endpoint);
    }

    /// @dev True when the caller may admit or remove on its own: always the admin in admin mode; in majority
    /// mode only until the consortium first reaches `minPeers` active members (bootstrap). Otherwise the
    /// caller must be an active member casting a vote.
    function _directAuthority() private view returns (bool) {
        if (msg.sender == _admin && (!_majorityAdmission || !_bootstrapped)) return true;
        if (!_majorityAdmission) revert SwarmLedgerNotAdmin(msg.sender);
        if (_members[msg.sender].status != MemberStatus.Active) revert SwarmLedgerNotActiveMember(msg.sender);
        return false;
    }

    function _vote(address candidate, Member storage m, bool admitVote) private returns (uint256 votes) {
        if (candidate == msg.sender) revert SwarmLedgerSelfVote(msg.sender);
        bytes32 ballot = keccak256(abi.encode(candidate, m.voteEpoch, admitVote, msg.sender));
        if (_ballots[ballot]) revert SwarmLedgerAlreadyVoted(candidate, msg.sender);
        _ballots[ballot] = true;
        if (admitVote) {
            votes = ++m.admitVotes;
        } else {
            votes = ++m.removeVotes;
        }
    }

    function _admitNow(address account, Member storage m) private {
        _pendingCount -= 1;
        _setStatus(m, MemberStatus.Active);
        uint32 active = _activeCount + 1;
        _activeCount = active;
        emit MemberAdmitted(account, msg.sender);
        if (_majorityAdmission && !_bootstrapped && active >= _minPeers) {
            _bootstrapped = true;
            emit BootstrapClosed(active);
        }
    }

    function _removeNow(address account, Member storage m) private {
        if (m.status == MemberStatus.Active) {
            _activeCount -= 1;
        } else {
            _pendingCount -= 1; // only pending and active sites are removable
        }
        _setStatus(m, MemberStatus.Removed);
        emit MemberRemoved(account, msg.sender);
    }

    function _setStatus(Member storage m, MemberStatus status) private {
        m.status = status;
        m.statusBlock = uint32(block.number);
        m.voteEpoch += 1;
        m.admitVotes = 0;
        m.removeVotes = 0;
    }

    function _checkEndpoint(string calldata endpoint) private pure {
        uint256 len = bytes(endpoint).length;
        if (len == 0 || len > MAX_ENDPOINT_BYTES) revert SwarmLedgerInvalidEndpoint(len);
    }

    // ================================================================== rounds

    /// @inheritdoc ISwarmLedger
    /// @dev The sender of the transaction is the binding of the keys to the member's on-chain identity.
    function advertise(uint256 roundId, bytes32 maskKey, bytes32 encKey) external {
        Member storage m = _members[msg.sender];
        if (m.status != MemberStatus.Active) revert SwarmLedgerNotActiveMember(msg.sender);
        if (!_secureAggregation) revert SwarmLedgerSecureAggregationOff();
        _checkCurrent(roundId);
        if (_currentElected || _openCommits != 0) revert SwarmLedgerKeysClosed(roundId);
        if (maskKey == bytes32(0) || encKey == bytes32(0)) revert SwarmLedgerZeroKey();
        if (m.lastAdvertRound == roundId + 1) revert SwarmLedgerAlreadyAdvertised(roundId, msg.sender);
        uint256 count = _openKeys;
        if (count >= MAX_COMMITTERS) revert SwarmLedgerRoundFull(roundId, MAX_COMMITTERS);

        m.lastAdvertRound = uint48(roundId + 1);
        _openKeys = uint16(count + 1);
        emit KeysAdvertised(roundId, msg.sender, maskKey, encKey);
    }

    /// @inheritdoc ISwarmLedger
    function commit(
        uint256 roundId,
        bytes32 updateHash,
        uint32 nSamples,
        uint32 milliEpsilon,
        uint16 keyCount,
        bytes32 seal
    ) external {
        Member storage m = _members[msg.sender];
        if (m.status != MemberStatus.Active) revert SwarmLedgerNotActiveMember(msg.sender);
        _checkCurrent(roundId);
        if (_currentElected) revert SwarmLedgerRoundNotOpen(roundId, RoundStatus.Elected);
        uint256 index = _openCommits;
        RoundData storage rd = _rounds[roundId];
        // Once a secret may be revealed nobody may commit: a late committer that saw revealed secrets could
        // pick its own to steer the draw. The window test reads the first commit only when it can matter.
        if (_revealMask != 0 || (index >= _minPeers && block.number >= _commitWindowEnd(rd))) {
            revert SwarmLedgerCommitsClosed(roundId);
        }
        if (m.lastCommitRound == roundId + 1) revert SwarmLedgerAlreadyCommitted(roundId, msg.sender);
        if (updateHash == bytes32(0)) revert SwarmLedgerZeroHash();
        if (nSamples == 0) revert SwarmLedgerZeroSamples();
        if (seal == bytes32(0)) revert SwarmLedgerZeroSeal();
        uint256 keys = _openKeys;
        if (keyCount != keys) revert SwarmLedgerStaleKeys(roundId, keys, keyCount);
        if (index >= MAX_COMMITTERS) revert SwarmLedgerRoundFull(roundId, MAX_COMMITTERS);

        m.lastCommitRound = uint48(roundId + 1);
        m.lastCommitIndex = uint16(index);
        m.seal = seal;
        _openCommits = uint16(index + 1);
        rd.commits[index] = CommitEntry(msg.sender, uint32(block.number), nSamples, milliEpsilon, updateHash);
        emit Committed(roundId, msg.sender, updateHash, nSamples, milliEpsilon);
    }

    /// @inheritdoc ISwarmLedger
    /// @dev The seal binds the secret to the caller and the round, so nobody can copy another's seal and
    /// reveal its secret once that secret is public.
    function reveal(uint256 roundId, bytes32 secret) external {
        _checkCurrent(roundId);
        if (_currentElected) revert SwarmLedgerRevealClosed(roundId);
        RoundData storage rd = _rounds[roundId];
        uint256 count = _openCommits;
        if (!_commitsClosed(rd, count)) revert SwarmLedgerRevealNotOpen(roundId);
        if (block.number >= _revealEnd(rd, count)) revert SwarmLedgerRevealClosed(roundId);
        Member storage m = _members[msg.sender];
        if (m.lastCommitRound != roundId + 1) revert SwarmLedgerNotCommitter(roundId, msg.sender);
        uint128 bit = uint128(1) << m.lastCommitIndex;
        uint128 mask = _revealMask;
        if (mask & bit != 0) revert SwarmLedgerAlreadyRevealed(roundId, msg.sender);
        if (keccak256(abi.encode(secret, msg.sender, roundId)) != m.seal) {
            revert SwarmLedgerBadReveal(roundId, msg.sender);
        }
        _revealMask = mask | bit;
        _entropy ^= keccak256(abi.encode(secret, msg.sender));
        emit Revealed(roundId, msg.sender, secret);
    }

    /// @inheritdoc ISwarmLedger
    /// @dev Randomness: the draw hashes the XOR of keccak256(secret, site) over every revealed secret, so it
    /// does not depend on the order of reveals, and no block producer or caller of elect() can influence it.
    /// A committer's secret is fixed by its seal before any secret is public (commits close before the first
    /// reveal may happen). Residual bias: the last revealer sees the others' secrets and may withhold its
    /// own, choosing between two draws at the price of being left out of the round (NotRevealed); a coalition
    /// of k revealers chooses among at most 2^k draws at that price. docs/protocol.md discusses the bound.
    function elect(uint256 roundId) external {
        RoundData storage rd = _current(roundId);
        if (_currentElected) revert SwarmLedgerRoundNotOpen(roundId, RoundStatus.Elected);
        uint256 count = _openCommits;
        if (count < _minPeers) revert SwarmLedgerNotEnoughCommits(roundId, count, _minPeers);
        if (!_commitsClosed(rd, count)) revert SwarmLedgerCommitWindowOpen(roundId, _commitWindowEnd(rd));
        uint128 mask = _revealMask;
        uint256 revealed = _popcount(mask);
        if (revealed < count) {
            uint256 end = _revealEnd(rd, count);
            if (block.number < end) revert SwarmLedgerRevealWindowOpen(roundId, end);
        }
        // Commits and reveals close here: the counts move from the hot slot into the round for good.
        rd.commitCount = uint16(count);
        rd.keyCount = _openKeys;
        rd.revealedMask = mask;
        _currentElected = true;
        _revealMask = 0;
        if (revealed < _minPeers) {
            // Too few secrets to trust the draw: a deterministic fallback, never a stall.
            _abandon(roundId, rd, 1);
            return;
        }
        _draw(roundId, rd, 1);
    }

    /// @inheritdoc ISwarmLedger
    /// @dev The draw reuses the round's revealed secrets with the next term, so it is fixed before anyone
    /// may call reelect() and does not depend on who calls it or when.
    function reelect(uint256 roundId) external {
        RoundData storage rd = _current(roundId);
        if (rd.electedBlock == 0) revert SwarmLedgerNotElected(roundId, RoundStatus.Open);
        uint256 deadline = uint256(rd.electedBlock) + _leaderTimeout;
        if (block.number <= deadline) revert SwarmLedgerLeaderTimeoutNotReached(roundId, deadline + 1);

        address failed = rd.leader;
        uint32 term = rd.term;
        rd.failedMask |= uint128(1) << _members[failed].lastCommitIndex;
        emit LeaderFailed(roundId, failed, term);
        _draw(roundId, rd, term + 1);
    }

    /// @inheritdoc ISwarmLedger
    function finalize(uint256 roundId, bytes32 mergedHash, bytes calldata outcomes) external {
        RoundData storage rd = _current(roundId);
        if (rd.electedBlock == 0) revert SwarmLedgerNotElected(roundId, RoundStatus.Open);
        address leader = rd.leader;
        if (msg.sender != leader) revert SwarmLedgerNotLeader(roundId, msg.sender, leader);
        if (mergedHash == bytes32(0)) revert SwarmLedgerZeroHash();
        uint256 count = rd.commitCount;
        if (outcomes.length != count) revert SwarmLedgerOutcomeCount(roundId, count, outcomes.length);

        uint256 revealed = rd.revealedMask;
        uint256[2] memory packed;
        bool anyIncluded;
        for (uint256 i; i < count; ++i) {
            uint256 code = uint8(outcomes[i]);
            if (code >= OUTCOME_COUNT) revert SwarmLedgerUnknownOutcome(roundId, i, code);
            // NotRevealed is the contract's verdict: required for every non-revealer, refused for anyone else.
            bool notRevealed = (revealed >> i) & 1 == 0;
            if ((code == uint256(Outcome.NotRevealed)) != notRevealed) {
                revert SwarmLedgerRevealOutcome(roundId, rd.commits[i].site, code);
            }
            if (code == uint256(Outcome.Included)) anyIncluded = true;
            else packed[i >> 6] |= code << ((i & 63) << 2);
        }
        if (!anyIncluded) revert SwarmLedgerNothingIncluded(roundId);

        rd.mergedHash = mergedHash;
        if (packed[0] != 0) rd.outcomes[0] = packed[0];
        if (packed[1] != 0) rd.outcomes[1] = packed[1];
        rd.closedBlock = uint48(block.number);
        emit RoundFinalized(roundId, leader, rd.term, mergedHash, outcomes);
        _openNext(roundId, mergedHash);
    }

    /// @inheritdoc ISwarmLedger
    function attest(uint256 roundId, bool ok) external {
        if (_members[msg.sender].status != MemberStatus.Active) revert SwarmLedgerNotActiveMember(msg.sender);
        RoundStatus status = _status(_known(roundId));
        if (status != RoundStatus.Finalized) revert SwarmLedgerNotFinalized(roundId, status);
        emit Attested(roundId, msg.sender, ok);
    }

    /// @inheritdoc ISwarmLedger
    function dispute(uint256 roundId, bytes calldata signature) external {
        RoundData storage rd = _known(roundId);
        RoundStatus status = _status(rd);
        if (status != RoundStatus.Finalized) revert SwarmLedgerNotFinalized(roundId, status);
        uint256 index = _commitIndex(roundId, rd, msg.sender);
        uint256 code = _outcome(rd, index);
        if (
            code != uint256(Outcome.NotDelivered) && code != uint256(Outcome.HashMismatch)
                && code != uint256(Outcome.Recovered)
        ) revert SwarmLedgerNoDeliveryClaim(roundId, msg.sender, code);
        uint128 bit = uint128(1 << index);
        uint128 disputed = _disputed[roundId];
        if (disputed & bit != 0) revert SwarmLedgerAlreadyDisputed(roundId, msg.sender);

        address leader = rd.leader;
        bytes32 structHash =
            keccak256(abi.encode(RECEIPT_TYPEHASH, roundId, rd.term, msg.sender, rd.commits[index].updateHash));
        address signer = _recover(keccak256(abi.encodePacked("\x19\x01", _domainSeparator(), structHash)), signature);
        if (signer != leader) revert SwarmLedgerReceiptNotLeader(roundId, signer, leader);
        _disputed[roundId] = disputed | bit;
        _disputes[leader] += 1;
        emit Disputed(roundId, msg.sender, leader);
    }

    function _domainSeparator() private view returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("SwarmLedger"), keccak256("1"), block.chainid, address(this))
        );
    }

    /// @dev The signer of a 65-byte (r, s, v) signature of `digest`; reverts unless there is one.
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address signer) {
        if (signature.length != 65) revert SwarmLedgerBadSignature();
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) v += 27;
        if (uint256(s) > HALF_ORDER || (v != 27 && v != 28)) revert SwarmLedgerBadSignature();
        signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert SwarmLedgerBadSignature();
    }

    /// @dev The index of `site`'s commit in `roundId`; reverts unless it committed there. The member record
    /// answers for its latest round without a search.
    function _commitIndex(uint256 roundId, RoundData storage rd, address site) private view returns (uint256) {
        Member storage m = _members[site];
        if (m.lastCommitRound == roundId + 1) return m.lastCommitIndex;
        uint256 count = _commitCount(roundId, rd);
        for (uint256 i; i < count; ++i) {
            if (rd.commits[i].site == site) return i;
        }
        revert SwarmLedgerNotCommitter(roundId, site);
    }

    function _outcome(RoundData storage rd, uint256 index) private view returns (uint256) {
        return (rd.outcomes[index >> 6] >> ((index & 63) << 2)) & 0xf;
    }

    /// @dev Returns the current round's storage, reverting for any other round.
    function _current(uint256 roundId) private view returns (RoundData storage) {
        _checkCurrent(roundId);
        return _rounds[roundId];
    }

    function _checkCurrent(uint256 roundId) private view {
        uint256 cur = _currentRound;
        if (roundId != cur) revert SwarmLedgerWrongRound(roundId, cur);
    }

    /// @dev Commits of a round: the hot-slot count while the current round is open, the round's own after.
    function _commitCount(uint256 roundId, RoundData storage rd) private view returns (uint256) {
        return roundId == _currentRound && !_currentElected ? _openCommits : rd.commitCount;
    }

    /// @dev Advertised key sets of a round, read like _commitCount.
    function _keyCount(uint256 roundId, RoundData storage rd) private view returns (uint256) {
        return roundId == _currentRound && !_currentElected ? _openKeys : rd.keyCount;
    }

    /// @dev Revealers of a round, read like _commitCount.
    function _revealedMask(uint256 roundId, RoundData storage rd) private view returns (uint256) {
        return roundId == _currentRound && !_currentElected ? _revealMask : rd.revealedMask;
    }

    /// @dev The first block in which the commit window no longer holds the open round back.
    function _commitWindowEnd(RoundData storage rd) private view returns (uint256) {
        return uint256(rd.commits[0].blockNumber) + _commitWindow;
    }

    /// @dev Whether the open round's commits have closed: at least `minPeers` commits, and every active member
    /// committed or the commit window ended, or someone revealed already (which only a close allowed).
    function _commitsClosed(RoundData storage rd, uint256 count) private view returns (bool) {
        if (count < _minPeers) return false;
        if (count >= _activeCount || _revealMask != 0) return true;
        return block.number >= _commitWindowEnd(rd);
    }

    /// @dev The first block in which the open round's reveal window is over. It runs from the block commits
    /// closed: the last commit's when every active member committed, else the commit window's end (or the
    /// last commit's, when the minPeers-th commit came after the window).
    function _revealEnd(RoundData storage rd, uint256 count) private view returns (uint256) {
        uint256 closed = rd.commits[count - 1].blockNumber;
        if (count < _activeCount) {
            uint256 windowEnd = _commitWindowEnd(rd);
            if (windowEnd > closed) closed = windowEnd;
        }
        return closed + _revealWindow;
    }

    function _popcount(uint256 mask) private pure returns (uint256 n) {
        for (; mask != 0; mask &= mask - 1) ++n;
    }

    /// @dev Draws a leader among the revealers that are still active and have not failed this round; abandons
    /// the round when there is none.
    function _draw(uint256 roundId, RoundData storage rd, uint32 term) private {
        uint256 count = rd.commitCount;
        uint256 eligible = uint256(rd.revealedMask) & ~uint256(rd.failedMask);
        address[] memory candidates = new address[](count);
        uint256 k;
        for (uint256 i; i < count; ++i) {
            if ((eligible >> i) & 1 == 0) continue;
            address site = rd.commits[i].site;
            if (_members[site].status == MemberStatus.Active) candidates[k++] = site;
        }
        if (k == 0) {
            _abandon(roundId, rd, term);
            return;
        }
        bytes32 entropy = _entropy;
        uint256 seed = uint256(keccak256(abi.encode(entropy, address(this), roundId, term)));
        address leader = candidates[seed % k];
        rd.term = term;
        rd.leader = leader;
        rd.electedBlock = uint48(block.number);
        emit LeaderElected(roundId, leader, term, entropy);
    }

    function _abandon(uint256 roundId, RoundData storage rd, uint32 term) private {
        rd.term = term;
        rd.leader = address(0);
        rd.abandoned = true;
        rd.closedBlock = uint48(block.number);
        emit RoundAbandoned(roundId, term);
        _openNext(roundId, baseHash(roundId));
    }

    function _openNext(uint256 roundId, bytes32 base) private {
        uint256 next = roundId + 1;
        _currentRound = uint48(next);
        _openCommits = 0;
        _openKeys = 0;
        _currentElected = false;
        _revealMask = 0;
        _entropy = ENTROPY_START;
        _rounds[next].openedBlock = uint48(block.number);
        emit RoundOpened(next, base);
    }

    function _status(RoundData storage rd) private view returns (RoundStatus) {
        if (rd.closedBlock != 0) return rd.abandoned ? RoundStatus.Abandoned : RoundStatus.Finalized;
        if (rd.electedBlock != 0) return RoundStatus.Elected;
        return RoundStatus.Open;
    }

    // ================================================================== views

    /// @inheritdoc ISwarmLedger
    function binding() external view returns (Binding memory) {
        return Binding(
            _taskHash,
            _initialModelHash,
            _minPeers,
            _commitWindow,
            _leaderTimeout,
            _revealWindow,
            _majorityAdmission,
            _admin,
            _deployBlock,
            _secureAggregation
        );
    }

    /// @inheritdoc ISwarmLedger
    function admin() external view returns (address) {
        return _admin;
    }

    /// @inheritdoc ISwarmLedger
    function pendingAdmin() external view returns (address) {
        return _pendingAdmin;
    }

    /// @inheritdoc ISwarmLedger
    function currentRound() external view returns (uint256) {
        return _currentRound;
    }

    /// @inheritdoc ISwarmLedger
    function activeMemberCount() external view returns (uint256) {
        return _activeCount;
    }

    /// @inheritdoc ISwarmLedger
    function pendingMemberCount() external view returns (uint256) {
        return _pendingCount;
    }

    /// @inheritdoc ISwarmLedger
    function memberCount() external view returns (uint256) {
        return _memberList.length;
    }

    /// @inheritdoc ISwarmLedger
    function getMember(address account) public view returns (MemberView memory) {
        Member storage m = _members[account];
        return MemberView(
            account, m.curveKey, m.endpoint, m.status, m.joinedBlock, m.statusBlock, m.admitVotes, m.removeVotes
        );
    }

    /// @inheritdoc ISwarmLedger
    function getMembers() external view returns (MemberView[] memory out) {
        uint256 n = _memberList.length;
        out = new MemberView[](n);
        for (uint256 i; i < n; ++i) {
            out[i] = getMember(_memberList[i]);
        }
    }

    /// @inheritdoc ISwarmLedger
    function hasVoted(address candidate, address voter, bool admitVote) external view returns (bool) {
        return _ballots[keccak256(abi.encode(candidate, _members[candidate].voteEpoch, admitVote, voter))];
    }

    /// @inheritdoc ISwarmLedger
    function roundStatus(uint256 roundId) external view returns (RoundStatus) {
        return _status(_known(roundId));
    }

    /// @inheritdoc ISwarmLedger
    /// @dev The model a round starts from: the latest finalized merged model before it, else the initial one.
    /// Walks back over abandoned rounds; views cost no gas.
    function baseHash(uint256 roundId) public view returns (bytes32) {
        _known(roundId);
        while (roundId > 0) {
            roundId -= 1;
            bytes32 merged = _rounds[roundId].mergedHash;
            if (merged != bytes32(0)) return merged;
        }
        return _initialModelHash;
    }

    /// @inheritdoc ISwarmLedger
    function getRound(uint256 roundId) external view returns (RoundView memory v) {
        RoundData storage rd = _known(roundId);
        uint256 count = _commitCount(roundId, rd);
        v.round = roundId;
        v.status = _status(rd);
        v.term = rd.term;
        v.leader = rd.leader;
        v.baseHash = baseHash(roundId);
        v.mergedHash = rd.mergedHash;
        v.openedBlock = rd.openedBlock;
        v.electedBlock = rd.electedBlock;
        v.closedBlock = rd.closedBlock;
        v.keyCount = uint16(_keyCount(roundId, rd));
        v.commits = new CommitView[](count);
        for (uint256 i; i < count; ++i) {
            CommitEntry storage c = rd.commits[i];
            v.commits[i] = CommitView(c.site, c.updateHash, c.nSamples, c.blockNumber, c.milliEpsilon);
        }
        v.failedLeaders = _sitesIn(rd, rd.failedMask);
        v.revealed = _sitesIn(rd, _revealedMask(roundId, rd));
        if (v.status == RoundStatus.Finalized) {
            v.outcomes = new bytes(count);
            uint256 included;
            uint256 recovered;
            for (uint256 i; i < count; ++i) {
                uint256 code = _outcome(rd, i);
                v.outcomes[i] = bytes1(uint8(code));
                if (code == uint256(Outcome.Included)) included |= uint256(1) << i;
                else if (code == uint256(Outcome.Recovered)) recovered |= uint256(1) << i;
            }
            v.included = _sitesIn(rd, included);
            v.recovered = _sitesIn(rd, recovered);
        }
    }

    /// @inheritdoc ISwarmLedger
    function hasCommitted(uint256 roundId, address site) external view returns (bool) {
        RoundData storage rd = _known(roundId);
        Member storage m = _members[site];
        if (m.lastCommitRound == roundId + 1) return true;
        uint256 count = _commitCount(roundId, rd);
        for (uint256 i; i < count; ++i) {
            if (rd.commits[i].site == site) return true;
        }
        return false;
    }

    /// @inheritdoc ISwarmLedger
    function canElect(uint256 roundId) external view returns (bool) {
        if (roundId != _currentRound || _currentElected) return false;
        RoundData storage rd = _rounds[roundId];
        uint256 count = _openCommits;
        if (!_commitsClosed(rd, count)) return false;
        return _popcount(_revealMask) >= count || block.number >= _revealEnd(rd, count);
    }

    /// @inheritdoc ISwarmLedger
    function canReveal(uint256 roundId) external view returns (bool) {
        if (roundId != _currentRound || _currentElected) return false;
        RoundData storage rd = _rounds[roundId];
        uint256 count = _openCommits;
        return _commitsClosed(rd, count) && block.number < _revealEnd(rd, count);
    }

    /// @inheritdoc ISwarmLedger
    function disputesAgainst(address leader) external view returns (uint256) {
        return _disputes[leader];
    }

    /// @inheritdoc ISwarmLedger
    function canReelect(uint256 roundId) external view returns (bool) {
        if (roundId != _currentRound) return false;
        RoundData storage rd = _rounds[roundId];
        if (rd.electedBlock == 0) return false;
        return block.number > uint256(rd.electedBlock) + _leaderTimeout;
    }

    function _known(uint256 roundId) private view returns (RoundData storage) {
        uint256 cur = _currentRound;
        if (roundId > cur) revert SwarmLedgerUnknownRound(roundId, cur);
        return _rounds[roundId];
    }

    function _sitesIn(RoundData storage rd, uint256 mask) private view returns (address[] memory sites) {
        uint256 n;
        for (uint256 m = mask; m != 0; m &= m - 1) ++n;
        sites = new address[](n);
        uint256 k;
        for (uint256 i; mask != 0; ++i) {
            if (mask & 1 != 0) sites[k++] = rd.commits[i].site;
            mask >>= 1;
        }
    }
}
