// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ISwarmLedger} from "./ISwarmLedger.sol";

/// @title SwarmLedger
/// @notice The source of truth of one swarm-learning task: who is a member, what each site committed
/// in each round, who merges it, and which model came out.
/// @dev Storage is packed so that a commit writes two fresh slots and a finalize three (gas goals:
/// commit <= 90k, elect/finalize <= 150k at 8 members). Round phases are derived from stored blocks.
/// Secure-aggregation rounds add one advertise() per site before the first commit; its keys live only in
/// the KeysAdvertised event, the contract keeps the count that every commit must quote.
contract SwarmLedger is ISwarmLedger {
    /// @notice Committer bitmasks are uint128 (the included and recovered masks share a slot), so a round holds
    /// at most this many commits.
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
        uint128 includedMask; // bit i: commit i is part of the merged model
        uint128 recoveredMask; // bit i: commit i's masked input did not arrive; its masks were recovered
        uint256 failedMask; // bit i: committer i failed as leader this round
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

    address private _admin;
    uint32 private _pendingCount; // packed with _admin: requestJoin never touches commit()'s hot slot
    address private _pendingAdmin; // offered the admin role by transferAdmin(), until it accepts

    address[] private _memberList;
    mapping(address => Member) private _members;
    mapping(bytes32 => address) private _curveKeyOwner;
    mapping(bytes32 => bool) private _ballots; // keccak(candidate, epoch, admit?, voter)
    mapping(uint256 => RoundData) private _rounds;

    /// @param taskHash canonical hash of the task (bundle + swarm settings) every site trains
    /// @param initialModelHash hash of the weights round 0 starts from
    /// @param minPeers commits needed before a leader can be elected
    /// @param commitWindow blocks after a round's first commit after which elect() no longer waits for everyone
    /// @param leaderTimeout blocks after an election after which reelect() may replace the leader
    /// @param majorityAdmission false: the admin admits and removes; true: a majority of active members does
    /// @param secureAggregation whether rounds use secure aggregation (sites advertise keys before committing)
    constructor(
        bytes32 taskHash,
        bytes32 initialModelHash,
        uint32 minPeers,
        uint32 commitWindow,
        uint32 leaderTimeout,
        bool majorityAdmission,
        bool secureAggregation
    ) {
        if (taskHash == bytes32(0)) revert SwarmLedgerInvalidBinding("taskHash");
        if (initialModelHash == bytes32(0)) revert SwarmLedgerInvalidBinding("initialModelHash");
        if (minPeers == 0 || minPeers > MAX_COMMITTERS) revert SwarmLedgerInvalidBinding("minPeers");
        if (leaderTimeout == 0) revert SwarmLedgerInvalidBinding("leaderTimeout");
        _taskHash = taskHash;
        _initialModelHash = initialModelHash;
        _minPeers = minPeers;
        _commitWindow = commitWindow;
        _leaderTimeout = leaderTimeout;
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
    function commit(uint256 roundId, bytes32 updateHash, uint32 nSamples, uint32 milliEpsilon, uint16 keyCount)
        external
    {
        Member storage m = _members[msg.sender];
        if (m.status != MemberStatus.Active) revert SwarmLedgerNotActiveMember(msg.sender);
        _checkCurrent(roundId);
        if (_currentElected) revert SwarmLedgerRoundNotOpen(roundId, RoundStatus.Elected);
        if (m.lastCommitRound == roundId + 1) revert SwarmLedgerAlreadyCommitted(roundId, msg.sender);
        if (updateHash == bytes32(0)) revert SwarmLedgerZeroHash();
        if (nSamples == 0) revert SwarmLedgerZeroSamples();
        uint256 keys = _openKeys;
        if (keyCount != keys) revert SwarmLedgerStaleKeys(roundId, keys, keyCount);
        uint256 index = _openCommits;
        if (index >= MAX_COMMITTERS) revert SwarmLedgerRoundFull(roundId, MAX_COMMITTERS);

        m.lastCommitRound = uint48(roundId + 1);
        m.lastCommitIndex = uint16(index);
        _openCommits = uint16(index + 1);
        _rounds[roundId].commits[index] =
            CommitEntry(msg.sender, uint32(block.number), nSamples, milliEpsilon, updateHash);
        emit Committed(roundId, msg.sender, updateHash, nSamples, milliEpsilon);
    }

    /// @inheritdoc ISwarmLedger
    /// @dev Randomness: the seed is the hash of the block that holds the round's LAST commit, mixed with the
    /// contract, round and term. A committer signs its commit before that block exists, so it cannot know the
    /// seed, and grinding its update hash changes nothing it can predict. Because the seed block is fixed by the
    /// commits, the caller of elect() cannot pick a favourable block either (while it is among the last 256).
    /// Residual bias: (1) the producer of the seed block (on QBFT: a validator, i.e. a member hospital) can try
    /// several block variants (timestamp, transaction order) and keep one that elects it; (2) in the
    /// commit-window case a member that has not committed yet sees the would-be leader and may commit, which
    /// moves the seed block and redraws once; (3) after 256 blocks the seed falls back to the previous block's
    /// hash, which the caller of elect() can time. docs/protocol.md discusses each.
    function elect(uint256 roundId) external {
        RoundData storage rd = _current(roundId);
        if (_currentElected) revert SwarmLedgerRoundNotOpen(roundId, RoundStatus.Elected);
        uint256 seedBlock = _electableCheck(roundId, rd);
        // Commits close here: the counts move from the hot slot into the round for good.
        rd.commitCount = _openCommits;
        rd.keyCount = _openKeys;
        _currentElected = true;
        _draw(roundId, rd, 1, seedBlock);
    }

    /// @inheritdoc ISwarmLedger
    /// @dev The seed is the hash of the block at which the timeout expired, so it is fixed before anyone may
    /// call reelect() and does not depend on who calls it or when (within 256 blocks).
    function reelect(uint256 roundId) external {
        RoundData storage rd = _current(roundId);
        if (rd.electedBlock == 0) revert SwarmLedgerNotElected(roundId, RoundStatus.Open);
        uint256 deadline = uint256(rd.electedBlock) + _leaderTimeout;
        if (block.number <= deadline) revert SwarmLedgerLeaderTimeoutNotReached(roundId, deadline + 1);

        address failed = rd.leader;
        uint32 term = rd.term;
        rd.failedMask |= uint256(1) << _members[failed].lastCommitIndex;
        emit LeaderFailed(roundId, failed, term);
        _draw(roundId, rd, term + 1, deadline);
    }

    /// @inheritdoc ISwarmLedger
    function finalize(
        uint256 roundId,
        bytes32 mergedHash,
        address[] calldata included,
        address[] calldata recovered
    ) external {
        RoundData storage rd = _current(roundId);
        if (rd.electedBlock == 0) revert SwarmLedgerNotElected(roundId, RoundStatus.Open);
        address leader = rd.leader;
        if (msg.sender != leader) revert SwarmLedgerNotLeader(roundId, msg.sender, leader);
        if (mergedHash == bytes32(0)) revert SwarmLedgerZeroHash();
        uint256 n = included.length;
        if (n == 0) revert SwarmLedgerNothingIncluded(roundId);

        uint256 mask;
        for (uint256 i; i < n; ++i) {
            address site = included[i];
            uint256 bit = _commitBit(roundId, site);
            if (mask & bit != 0) revert SwarmLedgerDuplicateIncluded(roundId, site);
            mask |= bit;
        }
        uint256 recoveredMask;
        for (uint256 i; i < recovered.length; ++i) {
            address site = recovered[i];
            uint256 bit = _commitBit(roundId, site);
            if (mask & bit != 0) revert SwarmLedgerRecoveredIncluded(roundId, site);
            if (recoveredMask & bit != 0) revert SwarmLedgerDuplicateRecovered(roundId, site);
            recoveredMask |= bit;
        }

        rd.mergedHash = mergedHash;
        // One slot for both masks: a round with dropouts pays no fresh slot for recording them. Both fit in
        // 128 bits because commit() caps a round at MAX_COMMITTERS.
        rd.includedMask = uint128(mask);
        rd.recoveredMask = uint128(recoveredMask);
        rd.closedBlock = uint48(block.number);
        emit RoundFinalized(roundId, leader, rd.term, mergedHash, included, recovered);
        _openNext(roundId, mergedHash);
    }

    /// @dev The bit of `site`'s commit in the current round; reverts unless it committed in `roundId`.
    /// lastCommitRound/Index identify the commit without a search.
    function _commitBit(uint256 roundId, address site) private view returns (uint256) {
        Member storage m = _members[site];
        if (m.lastCommitRound != roundId + 1) revert SwarmLedgerNotCommitter(roundId, site);
        return uint256(1) << m.lastCommitIndex;
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

    /// @dev Reverts unless an open round may elect now; returns the seed block (the last commit's block).
    function _electableCheck(uint256 roundId, RoundData storage rd) private view returns (uint256) {
        uint256 count = _openCommits;
        if (count < _minPeers) revert SwarmLedgerNotEnoughCommits(roundId, count, _minPeers);
        if (count < _activeCount) {
            uint256 windowEnd = uint256(rd.commits[0].blockNumber) + _commitWindow;
            if (block.number < windowEnd) revert SwarmLedgerCommitWindowOpen(roundId, windowEnd);
        }
        uint256 seedBlock = rd.commits[count - 1].blockNumber;
        if (block.number <= seedBlock) revert SwarmLedgerElectionTooEarly(roundId, seedBlock + 1);
        return seedBlock;
    }

    /// @dev Draws a leader among committers that are still active and have not failed this round; abandons
    /// the round when there is none.
    function _draw(uint256 roundId, RoundData storage rd, uint32 term, uint256 seedBlock) private {
        rd.term = term;
        uint256 count = rd.commitCount;
        uint256 failedMask = rd.failedMask;
        address[] memory candidates = new address[](count);
        uint256 k;
        for (uint256 i; i < count; ++i) {
            if (failedMask & (uint256(1) << i) != 0) continue;
            address site = rd.commits[i].site;
            if (_members[site].status == MemberStatus.Active) candidates[k++] = site;
        }
        if (k == 0) {
            rd.leader = address(0);
            rd.abandoned = true;
            rd.closedBlock = uint48(block.number);
            emit RoundAbandoned(roundId, term);
            _openNext(roundId, baseHash(roundId));
            return;
        }
        bytes32 entropy = blockhash(seedBlock);
        if (entropy == bytes32(0)) {
            // Older than 256 blocks: fall back to the newest hash there is (see the bias note on elect()).
            seedBlock = block.number - 1;
            entropy = blockhash(seedBlock);
        }
        uint256 seed = uint256(keccak256(abi.encode(entropy, address(this), roundId, term)));
        address leader = candidates[seed % k];
        rd.leader = leader;
        rd.electedBlock = uint48(block.number);
        emit LeaderElected(roundId, leader, term, seedBlock);
    }

    function _openNext(uint256 roundId, bytes32 base) private {
        uint256 next = roundId + 1;
        _currentRound = uint48(next);
        _openCommits = 0;
        _openKeys = 0;
        _currentElected = false;
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
        v.included = _sitesIn(rd, rd.includedMask);
        v.recovered = _sitesIn(rd, rd.recoveredMask);
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
        if (count < _minPeers) return false;
        if (count < _activeCount && block.number < uint256(rd.commits[0].blockNumber) + _commitWindow) {
            return false;
        }
        return block.number > rd.commits[count - 1].blockNumber;
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
