// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title ISwarmLedger
/// @notice Membership, round state and merge-leader election of one swarm-learning task.
/// @dev The interface owns the vocabulary (enums, view structs), the custom errors, the events and the
/// documentation of every external function: what it requires (each requirement names the error it reverts
/// with) and which events it emits. `SwarmLedger` implements it and inherits the documentation. Errors carry
/// the contract's prefix (`SwarmLedger...`) so that a revert decoded in a multi-contract trace names its
/// origin; the prefix costs no gas (an error is a 4-byte selector whatever its name). docs/protocol.md
/// describes the round protocol in prose.
interface ISwarmLedger {
    // ------------------------------------------------------------------ vocabulary
    /// @notice Where a site stands. `Removed` sites may ask to join again.
    enum MemberStatus {
        None,
        Pending,
        Active,
        Removed
    }

    /// @notice Phase of a round, derived from stored facts (election, close, abandonment).
    enum RoundStatus {
        Open,
        Elected,
        Finalized,
        Abandoned
    }

    /// @notice What finalize() says about one commit (one byte per commit, in commit order). `NotRevealed` is
    /// the contract's verdict (the committer did not reveal its election secret) and is required exactly for
    /// those committers; the others are the leader's claim. `NotDelivered`, `HashMismatch` and `Recovered`
    /// claim the update never reached the leader intact: a receipt signed by the leader disputes them.
    enum Outcome {
        Included,
        NotDelivered,
        HashMismatch,
        FailedValidation,
        RejectedByRule,
        NotRevealed,
        Recovered
    }

    /// @notice What the consortium agreed on at deploy time, plus the current admin.
    struct Binding {
        bytes32 taskHash;
        bytes32 initialModelHash;
        uint32 minPeers;
        uint32 commitWindow;
        uint32 leaderTimeout;
        uint32 revealWindow;
        bool majorityAdmission;
        address admin;
        uint64 deployBlock;
        bool secureAggregation;
    }

    /// @notice A member record; `admitVotes` / `removeVotes` count the ballots of the current status only.
    struct MemberView {
        address account;
        bytes32 curveKey;
        string endpoint;
        MemberStatus status;
        uint64 joinedBlock;
        uint64 statusBlock;
        uint16 admitVotes;
        uint16 removeVotes;
    }

    /// @notice One commit of a round, in commit order.
    /// @param milliEpsilon the site's cumulative differential-privacy epsilon after this round, in thousandths;
    /// 0 when the site keeps no privacy account
    struct CommitView {
        address site;
        bytes32 updateHash;
        uint32 nSamples;
        uint64 blockNumber;
        uint32 milliEpsilon;
    }

    /// @notice Everything a round holds; blocks are 0 until the event they record happened. `keyCount` is the
    /// number of sites that advertised secure-aggregation keys (0: a plain round); `recovered` lists the
    /// committers whose masked input did not arrive and whose masks the leader recovered from shares;
    /// `revealed` the committers that revealed their election secret (commit order); `outcomes` one
    /// {Outcome} byte per commit once the round is finalized (empty before).
    struct RoundView {
        uint256 round;
        RoundStatus status;
        uint32 term;
        address leader;
        bytes32 baseHash;
        bytes32 mergedHash;
        uint64 openedBlock;
        uint64 electedBlock;
        uint64 closedBlock;
        uint16 keyCount;
        CommitView[] commits;
        address[] failedLeaders;
        address[] included;
        address[] recovered;
        address[] revealed;
        bytes outcomes;
    }

    // ------------------------------------------------------------------ errors: deploy and admin
    /// @notice A constructor argument is out of range.
    /// @param field the argument's name: `taskHash`, `initialModelHash`, `minPeers`, `leaderTimeout` or
    /// `revealWindow`
    error SwarmLedgerInvalidBinding(string field);

    /// @notice Only the admin may do this (admin-mode membership, or starting or cancelling an admin transfer).
    error SwarmLedgerNotAdmin(address caller);

    /// @notice The zero address cannot become admin.
    error SwarmLedgerZeroAddress();

    /// @notice `acceptAdmin` was called by an account that is not the pending admin.
    /// @param pendingAdmin the account that may accept; the zero address when no transfer is pending
    error SwarmLedgerNotPendingAdmin(address caller, address pendingAdmin);

    /// @notice There is no pending admin transfer to cancel.
    error SwarmLedgerNoPendingAdmin();

    // ------------------------------------------------------------------ errors: membership
    /// @notice The account must be an active member (to commit, or to vote in majority mode).
    error SwarmLedgerNotActiveMember(address account);

    /// @notice The account already asked to join, or is a member.
    error SwarmLedgerAlreadyMember(address account, MemberStatus status);

    /// @notice The CURVE public key is zero.
    error SwarmLedgerInvalidCurveKey();

    /// @notice Another account registered this CURVE key first; a key belongs to one account forever.
    error SwarmLedgerCurveKeyTaken(bytes32 curveKey, address owner);

    /// @notice `MAX_PENDING` join requests already wait for a decision; admit or remove some first.
    /// @param maxPending how many may wait at once
    error SwarmLedgerTooManyPending(uint256 maxPending);

    /// @notice The endpoint is empty or longer than 256 bytes.
    /// @param length its length in bytes
    error SwarmLedgerInvalidEndpoint(uint256 length);

    /// @notice The site name is longer than 32 bytes.
    /// @param length its length in bytes
    error SwarmLedgerInvalidName(uint256 length);

    /// @notice Only a pending site can be admitted.
    error SwarmLedgerNotPending(address account, MemberStatus status);

    /// @notice Only a pending or active site can be removed.
    error SwarmLedgerNotRemovable(address account, MemberStatus status);

    /// @notice The account is neither pending nor active.
    error SwarmLedgerNotMember(address account);

    /// @notice The voter already cast this kind of ballot on the candidate's current status.
    error SwarmLedgerAlreadyVoted(address candidate, address voter);

    /// @notice A member cannot vote on its own removal.
    error SwarmLedgerSelfVote(address account);

    // ------------------------------------------------------------------ errors: rounds
    /// @notice The call names a round other than the current one.
    /// @param given the round in the call
    /// @param current the current round
    error SwarmLedgerWrongRound(uint256 given, uint256 current);

    /// @notice A view asked for a round that has not started yet.
    error SwarmLedgerUnknownRound(uint256 round, uint256 current);

    /// @notice The round already has a leader, so commits and elections are closed.
    error SwarmLedgerRoundNotOpen(uint256 round, RoundStatus status);

    /// @notice The round has no leader yet, so there is nobody to finalize or replace.
    error SwarmLedgerNotElected(uint256 round, RoundStatus status);

    /// @notice The site already committed in this round.
    error SwarmLedgerAlreadyCommitted(uint256 round, address site);

    /// @notice An update or merged-model hash is zero.
    error SwarmLedgerZeroHash();

    /// @notice A commit claims zero training samples.
    error SwarmLedgerZeroSamples();

    /// @notice The round already holds `maxCommitters` commits.
    error SwarmLedgerRoundFull(uint256 round, uint256 maxCommitters);

    /// @notice Fewer than `minPeers` sites committed.
    error SwarmLedgerNotEnoughCommits(uint256 round, uint256 commits, uint256 minPeers);

    /// @notice Not every active member committed and the commit window is still open.
    /// @param electableAtBlock the first block in which the window no longer holds the election back
    error SwarmLedgerCommitWindowOpen(uint256 round, uint256 electableAtBlock);

    /// @notice Commits are closed: a secret may already be revealed (at least `minPeers` committed and the
    /// commit window ended, or a committer revealed).
    error SwarmLedgerCommitsClosed(uint256 round);

    /// @notice A commit's election seal is zero.
    error SwarmLedgerZeroSeal();

    /// @notice Secrets cannot be revealed yet: commits are still open.
    error SwarmLedgerRevealNotOpen(uint256 round);

    /// @notice Secrets can no longer be revealed: the reveal window ended or the round has a leader.
    error SwarmLedgerRevealClosed(uint256 round);

    /// @notice The secret does not open the caller's seal (keccak256(abi.encode(secret, caller, round))).
    error SwarmLedgerBadReveal(uint256 round, address site);

    /// @notice The caller already revealed its secret in this round.
    error SwarmLedgerAlreadyRevealed(uint256 round, address site);

    /// @notice Not every committer revealed and the reveal window is still open.
    /// @param electableAtBlock the first block in which elect() no longer waits for the missing secrets
    error SwarmLedgerRevealWindowOpen(uint256 round, uint256 electableAtBlock);

    /// @notice The current leader still has time to finalize.
    /// @param reelectableAtBlock the first block in which reelect() may run
    error SwarmLedgerLeaderTimeoutNotReached(uint256 round, uint256 reelectableAtBlock);

    /// @notice Only the current term's leader may finalize.
    error SwarmLedgerNotLeader(uint256 round, address caller, address leader);

    /// @notice A merged model must include at least one committed update.
    error SwarmLedgerNothingIncluded(uint256 round);

    /// @notice The account did not commit in this round.
    error SwarmLedgerNotCommitter(uint256 round, address account);

    /// @notice finalize() must give exactly one outcome byte per commit.
    error SwarmLedgerOutcomeCount(uint256 round, uint256 commits, uint256 outcomes);

    /// @notice An outcome byte is not an {Outcome}.
    /// @param index the commit it was given for
    error SwarmLedgerUnknownOutcome(uint256 round, uint256 index, uint256 code);

    /// @notice `NotRevealed` must be given exactly for the committers that did not reveal.
    error SwarmLedgerRevealOutcome(uint256 round, address site, uint256 code);

    /// @notice The round is not finalized (attestations and disputes are about finalized rounds).
    error SwarmLedgerNotFinalized(uint256 round, RoundStatus status);

    /// @notice The caller's outcome does not claim its update failed to arrive, so there is nothing to dispute.
    error SwarmLedgerNoDeliveryClaim(uint256 round, address site, uint256 outcome);

    /// @notice The caller already disputed this round.
    error SwarmLedgerAlreadyDisputed(uint256 round, address site);

    /// @notice The receipt signature is not 65 bytes, or no signer can be recovered from it.
    error SwarmLedgerBadSignature();

    /// @notice The receipt was not signed by the round's leader (for this round, term, caller and hash).
    error SwarmLedgerReceiptNotLeader(uint256 round, address signer, address leader);

    // ------------------------------------------------------------------ errors: secure aggregation keys
    /// @notice Keys can only be advertised while the current round is open and has no commit yet.
    error SwarmLedgerKeysClosed(uint256 round);

    /// @notice The member already advertised keys in this round.
    error SwarmLedgerAlreadyAdvertised(uint256 round, address site);

    /// @notice A secure-aggregation public key is zero.
    error SwarmLedgerZeroKey();

    /// @notice The task was deployed without secure aggregation, so there are no keys to advertise.
    error SwarmLedgerSecureAggregationOff();

    /// @notice The commit was masked against another set of advertised keys than the round now holds.
    /// @param expected how many sites advertised keys in the round
    /// @param got the count the commit quoted
    error SwarmLedgerStaleKeys(uint256 round, uint256 expected, uint256 got);

    // ------------------------------------------------------------------ events
    /// @notice Emitted when `newAdmin` becomes the admin: at deploy (from the zero address) and when a pending
    /// admin accepts.
    event AdminTransferred(address indexed previousAdmin, address indexed newAdmin);

    /// @notice Emitted when the admin names `newAdmin` as pending admin; replaces any earlier pending transfer.
    event AdminTransferStarted(address indexed admin, address indexed newAdmin);

    /// @notice Emitted when the admin withdraws the pending transfer to `pendingAdmin`.
    event AdminTransferCancelled(address indexed admin, address indexed pendingAdmin);

    /// @notice Emitted when `account` asks to join (or to rejoin after removal) and becomes pending.
    /// @param name the site's human-readable name as the site gave it (0..32 bytes, unchecked otherwise:
    /// readers validate it and never take it for an address). It lives only in this event, not in storage.
    event JoinRequested(address indexed account, bytes32 curveKey, string endpoint, string name);

    /// @notice Emitted when an active member votes in majority mode.
    /// @param admit true for an admission vote, false for a removal vote
    /// @param votes the ballots of this kind on the candidate's current status, this one included
    /// @param needed the ballots that settle it (a strict majority of the electorate)
    event VoteCast(address indexed candidate, address indexed voter, bool admit, uint256 votes, uint256 needed);

    /// @notice Emitted when a pending site becomes active.
    /// @param by the admin, or the member whose vote reached the majority
    event MemberAdmitted(address indexed account, address indexed by);

    /// @notice Emitted when a pending or active site is removed.
    /// @param by the admin, or the member whose vote reached the majority
    event MemberRemoved(address indexed account, address indexed by);

    /// @notice Emitted when, in majority mode, `minPeers` members are active for the first time (once): from
    /// then on only votes admit and remove.
    event BootstrapClosed(uint256 activeMembers);

    /// @notice Emitted when a pending or active member moves its endpoint.
    event EndpointUpdated(address indexed account, string endpoint);

    /// @notice Emitted when a round opens: round 0 at deploy, the next one when a round is finalized or abandoned.
    /// @param baseHash the model the round starts from
    event RoundOpened(uint256 indexed round, bytes32 baseHash);

    /// @notice Emitted when `site` advertises its per-round secure-aggregation public keys (X25519): `maskKey`
    /// for pairwise mask agreement, `encKey` for encrypting shares. The event is where peers read them.
    event KeysAdvertised(uint256 indexed round, address indexed site, bytes32 maskKey, bytes32 encKey);

    /// @notice Emitted when `site` commits to an update in the current round.
    /// @param milliEpsilon the site's cumulative epsilon after the round, in thousandths (0: no DP account)
    event Committed(
        uint256 indexed round, address indexed site, bytes32 updateHash, uint32 nSamples, uint32 milliEpsilon
    );

    /// @notice Emitted when `site` opens its election seal; anyone can recompute the draw from these.
    event Revealed(uint256 indexed round, address indexed site, bytes32 secret);

    /// @notice Emitted when a leader is drawn, by elect() (term 1) or reelect() (later terms).
    /// @param entropy the XOR of keccak256(abi.encode(secret, site)) over the round's revealers; the draw is
    /// keccak256(abi.encode(entropy, this contract, round, term)) modulo the candidates
    event LeaderElected(uint256 indexed round, address indexed leader, uint32 term, bytes32 entropy);

    /// @notice Emitted when reelect() excludes `leader` from the round for not finalizing in time.
    event LeaderFailed(uint256 indexed round, address indexed leader, uint32 term);

    /// @notice Emitted when the leader closes the round with the merged model; `outcomes` holds one {Outcome}
    /// byte per commit, in commit order.
    event RoundFinalized(
        uint256 indexed round, address indexed leader, uint32 term, bytes32 mergedHash, bytes outcomes
    );

    /// @notice Emitted when a member publishes whether its audit of a finalized round agreed (`ok`).
    event Attested(uint256 indexed round, address indexed auditor, bool ok);

    /// @notice Emitted when `site` proves with a receipt signed by `leader` that its update was delivered.
    event Disputed(uint256 indexed round, address indexed site, address indexed leader);

    /// @notice Emitted when a draw finds no committer that is still active and has not failed this round.
    event RoundAbandoned(uint256 indexed round, uint32 term);

    // ------------------------------------------------------------------ admin
    /// @notice Start handing the admin role to `newAdmin`, who must accept it with acceptAdmin(). Until then
    /// the caller stays admin; a later call replaces the pending admin.
    /// @dev Requirements: the caller is the admin (`SwarmLedgerNotAdmin`); `newAdmin` is not the zero address
    /// (`SwarmLedgerZeroAddress`). Emits {AdminTransferStarted}.
    function transferAdmin(address newAdmin) external;

    /// @notice Take the admin role that the admin offered to the caller with transferAdmin().
    /// @dev Requirements: the caller is the pending admin (`SwarmLedgerNotPendingAdmin`, whose second argument
    /// is the zero address when no transfer is pending). Clears the pending admin. Emits {AdminTransferred}.
    function acceptAdmin() external;

    /// @notice Withdraw the pending admin transfer.
    /// @dev Requirements: the caller is the admin (`SwarmLedgerNotAdmin`); a transfer is pending
    /// (`SwarmLedgerNoPendingAdmin`). Emits {AdminTransferCancelled}.
    function cancelAdminTransfer() external;

    // ------------------------------------------------------------------ membership
    /// @notice Ask to join with a CURVE public key (32 raw bytes), a ZeroMQ endpoint such as tcp://host:port
    /// and the site's name (shown in logs and tables beside its account). A removed site may ask again.
    /// @dev Requirements: the caller is not pending or active (`SwarmLedgerAlreadyMember`); `curveKey` is not
    /// zero (`SwarmLedgerInvalidCurveKey`) and no other account registered it (`SwarmLedgerCurveKeyTaken`);
    /// `endpoint` is 1..256 bytes (`SwarmLedgerInvalidEndpoint`); `name` is at most 32 bytes
    /// (`SwarmLedgerInvalidName`); fewer than `MAX_PENDING` requests are pending (`SwarmLedgerTooManyPending`).
    /// Emits {JoinRequested}.
    function requestJoin(bytes32 curveKey, string calldata endpoint, string calldata name) external;

    /// @notice Admit a pending site: directly by the admin, or as one vote in majority mode.
    /// @dev Requirements: `account` is pending (`SwarmLedgerNotPending`). In admin mode the caller is the admin
    /// (`SwarmLedgerNotAdmin`). In majority mode the caller is the admin during bootstrap, else an active member
    /// (`SwarmLedgerNotActiveMember`) that has not voted to admit `account` yet (`SwarmLedgerAlreadyVoted`).
    /// Emits {VoteCast} for a vote; {MemberAdmitted} once admitted, and {BootstrapClosed} when that makes
    /// `minPeers` members active for the first time in majority mode.
    function admit(address account) external;

    /// @notice Remove a pending or active site: directly by the admin, or as one vote in majority mode.
    /// @dev Requirements: `account` is pending or active (`SwarmLedgerNotRemovable`). In admin mode the caller
    /// is the admin (`SwarmLedgerNotAdmin`). In majority mode the caller is the admin during bootstrap, else an
    /// active member (`SwarmLedgerNotActiveMember`) other than `account` (`SwarmLedgerSelfVote`) that has not
    /// voted to remove it yet (`SwarmLedgerAlreadyVoted`). Emits {VoteCast} for a vote and {MemberRemoved}
    /// once removed.
    function remove(address account) external;

    /// @notice Change the caller's endpoint.
    /// @dev Requirements: the caller is pending or active (`SwarmLedgerNotMember`); `endpoint` is 1..256 bytes
    /// (`SwarmLedgerInvalidEndpoint`). Emits {EndpointUpdated}.
    function updateEndpoint(string calldata endpoint) external;

    // ------------------------------------------------------------------ rounds
    /// @notice Publish the caller's fresh secure-aggregation public keys for `round`, bound to its account by
    /// the transaction itself. Every peer masks against the set of keys advertised before the first commit.
    /// @dev Requirements: the caller is an active member (`SwarmLedgerNotActiveMember`); the task was deployed
    /// with secure aggregation (`SwarmLedgerSecureAggregationOff`); `round` is the current
    /// round (`SwarmLedgerWrongRound`), open and without any commit yet (`SwarmLedgerKeysClosed`); neither key
    /// is zero (`SwarmLedgerZeroKey`); the caller has not advertised in this round
    /// (`SwarmLedgerAlreadyAdvertised`); fewer than `MAX_COMMITTERS` sites advertised (`SwarmLedgerRoundFull`).
    /// Emits {KeysAdvertised}.
    function advertise(uint256 round, bytes32 maskKey, bytes32 encKey) external;

    /// @notice Commit to update `updateHash` trained on `nSamples` samples, once per round, current round only.
    /// `milliEpsilon` is the caller's cumulative epsilon after this round in thousandths (0: no DP account);
    /// `keyCount` is the number of advertised key sets the update was masked against (0 in a plain round);
    /// `seal` is keccak256(abi.encode(secret, caller, round)) for a fresh 32-byte election secret.
    /// @dev Requirements: the caller is an active member (`SwarmLedgerNotActiveMember`); `round` is the current
    /// round (`SwarmLedgerWrongRound`), not elected (`SwarmLedgerRoundNotOpen`) and its commits are not closed:
    /// nobody revealed yet and not (at least `minPeers` commits and `commitWindow` blocks since the first)
    /// (`SwarmLedgerCommitsClosed`); the caller has not committed in it (`SwarmLedgerAlreadyCommitted`);
    /// `updateHash` is not zero (`SwarmLedgerZeroHash`); `nSamples` is not zero (`SwarmLedgerZeroSamples`);
    /// `seal` is not zero (`SwarmLedgerZeroSeal`); `keyCount` equals the round's advertised count
    /// (`SwarmLedgerStaleKeys`); the round holds fewer than `MAX_COMMITTERS` (128) commits
    /// (`SwarmLedgerRoundFull`). Closes advertising for the round. Emits {Committed}.
    function commit(
        uint256 round,
        bytes32 updateHash,
        uint32 nSamples,
        uint32 milliEpsilon,
        uint16 keyCount,
        bytes32 seal
    ) external;

    /// @notice Open the caller's election seal. Allowed once commits have closed (at least `minPeers`
    /// commits, and every active member committed or `commitWindow` blocks passed since the first commit),
    /// for `revealWindow` blocks from that close. A committer that does not reveal cannot lead the round and
    /// is `NotRevealed` in its finalize.
    /// @dev Requirements: `round` is the current round (`SwarmLedgerWrongRound`), not elected
    /// (`SwarmLedgerRevealClosed`); commits have closed (`SwarmLedgerRevealNotOpen`); the reveal window has not
    /// ended (`SwarmLedgerRevealClosed`); the caller committed in it (`SwarmLedgerNotCommitter`) and has not
    /// revealed (`SwarmLedgerAlreadyRevealed`); `secret` opens its seal (`SwarmLedgerBadReveal`).
    /// Emits {Revealed}.
    function reveal(uint256 round, bytes32 secret) external;

    /// @notice Draw the round's merge leader among the committers that revealed, once every committer revealed
    /// or the reveal window ended. Anyone may call. With fewer than `minPeers` revealers the round is abandoned.
    /// @dev Requirements: `round` is the current round (`SwarmLedgerWrongRound`) and open
    /// (`SwarmLedgerRoundNotOpen`); at least `minPeers` sites committed (`SwarmLedgerNotEnoughCommits`); every
    /// active member committed or `commitWindow` blocks passed since the first commit
    /// (`SwarmLedgerCommitWindowOpen`); every committer revealed or `revealWindow` blocks passed since commits
    /// closed (`SwarmLedgerRevealWindowOpen`). Closes commits and reveals. Emits {LeaderElected}; or, when
    /// fewer than `minPeers` revealed or no revealer is still active, {RoundAbandoned} and {RoundOpened}.
    function elect(uint256 round) external;

    /// @notice Replace a leader that did not finalize within `leaderTimeout` blocks; abandons the round
    /// when no revealer is left to draw. Anyone may call. The draw uses the same revealed secrets, next term.
    /// @dev Requirements: `round` is the current round (`SwarmLedgerWrongRound`) and has a leader
    /// (`SwarmLedgerNotElected`); more than `leaderTimeout` blocks passed since the latest election
    /// (`SwarmLedgerLeaderTimeoutNotReached`). Emits {LeaderFailed}, then {LeaderElected} with the next term;
    /// or {RoundAbandoned} and {RoundOpened} for the next round.
    function reelect(uint256 round) external;

    /// @notice Close the round with the merged model's hash, accounting for every commit: `outcomes` holds one
    /// {Outcome} byte per commit, in commit order.
    /// @dev Requirements: `round` is the current round (`SwarmLedgerWrongRound`) and has a leader
    /// (`SwarmLedgerNotElected`); the caller is the current term's leader (`SwarmLedgerNotLeader`);
    /// `mergedHash` is not zero (`SwarmLedgerZeroHash`); `outcomes` has one byte per commit
    /// (`SwarmLedgerOutcomeCount`), each an {Outcome} (`SwarmLedgerUnknownOutcome`), `NotRevealed` exactly for
    /// the committers that did not reveal (`SwarmLedgerRevealOutcome`), at least one `Included`
    /// (`SwarmLedgerNothingIncluded`). Emits {RoundFinalized} and {RoundOpened} for the next round.
    function finalize(uint256 round, bytes32 mergedHash, bytes calldata outcomes) external;

    /// @notice Publish whether the caller's audit of a finalized round agreed with its merged model. Nothing
    /// is stored: the event is the record.
    /// @dev Requirements: the caller is an active member (`SwarmLedgerNotActiveMember`); `round` is known
    /// (`SwarmLedgerUnknownRound`) and finalized (`SwarmLedgerNotFinalized`). Emits {Attested}.
    function attest(uint256 round, bool ok) external;

    /// @notice Contest a delivery claim of the caller's finalize outcome with the leader's receipt: an
    /// EIP-712 signature (domain "SwarmLedger", "1", this chain, this contract) over
    /// Receipt(uint256 round, uint32 term, address site, bytes32 updateHash) for the finalized term, the
    /// caller and its committed hash. Counts one dispute against the leader.
    /// @dev Requirements: `round` is known (`SwarmLedgerUnknownRound`) and finalized
    /// (`SwarmLedgerNotFinalized`); the caller committed in it (`SwarmLedgerNotCommitter`); its outcome is
    /// `NotDelivered`, `HashMismatch` or `Recovered` (`SwarmLedgerNoDeliveryClaim`); it has not disputed the
    /// round (`SwarmLedgerAlreadyDisputed`); the signature has 65 bytes and a signer
    /// (`SwarmLedgerBadSignature`), the round's leader (`SwarmLedgerReceiptNotLeader`). Emits {Disputed}.
    function dispute(uint256 round, bytes calldata signature) external;

    // ------------------------------------------------------------------ views
    /// @notice The deploy-time binding and the current admin.
    function binding() external view returns (Binding memory);

    /// @notice The account that holds the admin role.
    function admin() external view returns (address);

    /// @notice The account a pending admin transfer was offered to; the zero address when none is pending.
    function pendingAdmin() external view returns (address);

    /// @notice The current round: the one that is open or elected.
    function currentRound() external view returns (uint256);

    /// @notice How many members are active.
    function activeMemberCount() external view returns (uint256);

    /// @notice How many join requests are pending (at most `MAX_PENDING`).
    function pendingMemberCount() external view returns (uint256);

    /// @notice How many accounts ever asked to join (each counted once).
    function memberCount() external view returns (uint256);

    /// @notice The record of `account`; status `None` when it never asked to join.
    function getMember(address account) external view returns (MemberView memory);

    /// @notice Every account that ever asked to join, in order of first request.
    function getMembers() external view returns (MemberView[] memory);

    /// @notice Whether `voter` cast an admission (`admitVote`) or removal ballot on `candidate`'s current status.
    function hasVoted(address candidate, address voter, bool admitVote) external view returns (bool);

    /// @notice The phase of `round`.
    /// @dev Reverts with `SwarmLedgerUnknownRound` for a round after the current one.
    function roundStatus(uint256 round) external view returns (RoundStatus);

    /// @notice The model `round` starts from.
    /// @dev Reverts with `SwarmLedgerUnknownRound` for a round after the current one.
    function baseHash(uint256 round) external view returns (bytes32);

    /// @notice Everything `round` holds.
    /// @dev Reverts with `SwarmLedgerUnknownRound` for a round after the current one.
    function getRound(uint256 round) external view returns (RoundView memory);

    /// @notice Whether `site` committed in `round`.
    /// @dev Reverts with `SwarmLedgerUnknownRound` for a round after the current one.
    function hasCommitted(uint256 round, address site) external view returns (bool);

    /// @notice Whether elect(round) would succeed in this block; false (never a revert) otherwise.
    function canElect(uint256 round) external view returns (bool);

    /// @notice Whether reelect(round) would succeed in this block; false (never a revert) otherwise.
    function canReelect(uint256 round) external view returns (bool);

    /// @notice Whether a committer of `round` that has not revealed could reveal in this block.
    function canReveal(uint256 round) external view returns (bool);

    /// @notice How many disputes were recorded against `leader` (receipts that contradicted its finalize).
    function disputesAgainst(address leader) external view returns (uint256);
}
